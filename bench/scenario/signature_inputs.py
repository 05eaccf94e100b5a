"""Which signature each encoding sends to, and what fills it: read from the target, shared with Locust.

The sweep and capacity commands call :func:`resolve_plans` once, before any load: for every
encoding, the signature it targets (``--signature-name``; else the encoding's own, e.g.
``serving_bytes`` for the b64 encodings, when the model has it; else ``serving_default``), that
signature's inputs from the target's metadata (``TFServingClient.input_specs``) and an
:class:`InputPlan` for them, or one ``ConfigError`` line saying why the encoding cannot express
the signature and which encodings can. The plans go to every Locust process as one JSON file
(``--input-plan``); :func:`payload_sources` reads it there. ``--input-plan auto`` resolves them in
the Locust process from its ``--host`` (default fills, no preflight). Without either the scenario
sends the reference model's images (uint8 128x128x3), as before.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import ConfigError
from bench.payloads.encodings import ENCODINGS, Encoding, get_encoding
from bench.payloads.images import image_source
from bench.payloads.input_plan import InputBatches, InputOptions, InputPlan, plan_inputs
from bench.payloads.pool import BatchSource
from bench.payloads.specs import InputSpec
from bench.scenario.options import ScenarioConfig
from bench.target.client import TFServingClient
from bench.target.replicas import parse_hosts

PLAN_FILE = "input_plan.json"
AUTO = "auto"  # --input-plan auto: resolve the plans in the Locust process itself


@dataclass(frozen=True)
class EncodingPlan:
    """One encoding aimed at one signature, and how that signature's inputs are filled."""

    encoding: Encoding
    plan: InputPlan


def signature_for(encoding: Encoding, signatures: Collection[str], requested: str = "") -> str:
    """The signature an encoding sends to ("" = serving_default, TF Serving's default)."""
    if requested:
        return requested
    if encoding.signature_name and encoding.signature_name in signatures:
        return encoding.signature_name
    return ""


def applicable_encodings(specs: Sequence[InputSpec]) -> list[str]:
    """The encodings that can express a signature with inputs ``specs``."""
    return [name for name, encoding in ENCODINGS.items() if encoding.refusal(specs) is None]


def resolve_plans(
    client: TFServingClient, encodings: Sequence[str], options: InputOptions, signature_name: str = ""
) -> dict[str, EncodingPlan]:
    """Per encoding name: the encoding aimed at its signature, and the plan for that signature's inputs."""
    signatures = client.signatures()
    out: dict[str, EncodingPlan] = {}
    for name in encodings:
        encoding = get_encoding(name)
        signature = signature_for(encoding, signatures, signature_name)
        specs = client.input_specs(signature)
        shown = signature or "serving_default"
        refusal = encoding.refusal(specs)
        if refusal:
            fits = ", ".join(applicable_encodings(specs)) or "none"
            raise ConfigError(
                f"--encodings {name} cannot send signature '{shown}': {refusal} (encodings that apply: {fits})"
            )
        out[name] = EncodingPlan(encoding.with_signature(signature), plan_inputs(specs, options, signature))
    return out


def check_batch_sizes(plans: dict[str, EncodingPlan], batch_sizes: Sequence[int]) -> None:
    """ConfigError when a signature fixes its batch dimension and a batch size differs."""
    for name, planned in plans.items():
        fixed = planned.plan.fixed_batch
        wrong = [b for b in batch_sizes if fixed is not None and b != fixed]
        if wrong:
            raise ConfigError(
                f"signature '{planned.plan.signature_name or 'serving_default'}' ({name}) takes batches of exactly "
                f"{fixed}: use --batch-sizes {fixed}"
            )


def write_plan_file(path: Path, plans: dict[str, EncodingPlan]) -> Path:
    doc = {"encodings": {name: p.plan.to_dict() for name, p in plans.items()}}
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


def read_plan_file(path: Path) -> dict[str, InputPlan]:
    """Encoding name -> plan, from :func:`write_plan_file`'s file; ConfigError if unreadable."""
    try:
        text = str(path)
        # Inline JSON: the plan itself travels to remote workers with the master's options.
        doc: Any = json.loads(text if text.lstrip().startswith("{") else Path(path).read_text(encoding="utf-8"))
        return {name: InputPlan.from_dict(raw) for name, raw in doc["encodings"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"--input-plan {str(path)[:200]}: not a readable input plan ({exc})") from None


def payload_sources(config: ScenarioConfig) -> list[tuple[Encoding, BatchSource, str | None]]:
    """Per encoding of the scenario: the encoding (aimed at its signature), its batches, its input key."""
    if config.input_plan is not None and str(config.input_plan) == AUTO:
        if not config.host:
            raise ConfigError("--input-plan auto reads the target's metadata: give Locust a --host")
        # Every replica serves the same model: the first one's metadata stands for all.
        client = TFServingClient(parse_hosts(config.host)[0], config.model_name, config.model_version)
        options = InputOptions(images=str(config.images_dir) if config.images_dir else None)
        resolved = resolve_plans(client, config.encodings, options, config.signature_name)
        return [(_aimed(p.encoding, config), InputBatches(p.plan), None) for p in resolved.values()]
    if config.input_plan is not None:
        plans = read_plan_file(config.input_plan)
        missing = [name for name in config.encodings if name not in plans]
        if missing:
            raise ConfigError(f"--input-plan {config.input_plan} has no plan for encoding(s) {', '.join(missing)}")
        return [
            (
                _aimed(get_encoding(name).with_signature(plans[name].signature_name), config),
                InputBatches(plans[name]),
                None,
            )
            for name in config.encodings
        ]
    source = image_source(config.images_dir, 128, 128)
    out: list[tuple[Encoding, BatchSource, str | None]] = []
    for name in config.encodings:
        encoding = get_encoding(name)
        if config.signature_name:
            encoding = encoding.with_signature(config.signature_name)
        out.append((_aimed(encoding, config), source, None))  # None: the encoding's own input key
    return out


def _aimed(encoding: Encoding, config: ScenarioConfig) -> Encoding:
    # gRPC bodies name the model (REST puts it in the URL): the scenario's model and version.
    return encoding.with_model(config.model_name, config.model_version)
