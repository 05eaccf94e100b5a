"""Before a run measures anything: the signature's inputs resolved, and one checked request per encoding.

:func:`prepare_inputs` is what sweep and capacity call once the target answers: every encoding's
signature and input plan (``bench.scenario.signature_inputs``), then, per encoding, one request
of the smallest batch size, which must answer 200 with one prediction per instance shaped as the
metadata's outputs say. Anything else stops the run before its first cell with one line holding
the server's own error text, instead of a grid of cells that measured 400s.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.errors import ConfigError, PredictError, ServerError
from bench.payloads.encodings import Encoding
from bench.payloads.input_plan import InputBatches, InputOptions
from bench.payloads.tensors import value_bytes
from bench.scenario.signature_inputs import (
    PLAN_FILE,
    EncodingPlan,
    check_batch_sizes,
    resolve_plans,
    write_plan_file,
)
from bench.target.client import TFServingClient
from bench.target.grpc_client import TFServingGrpcClient


def input_options_from_args(args: argparse.Namespace) -> InputOptions:
    """The input flags shared by sweep and capacity (``bench.cli``'s scenario options)."""
    return InputOptions(
        input_shapes=tuple(getattr(args, "input_shape", None) or ()),
        input_ranges=tuple(getattr(args, "input_range", None) or ()),
        bytes_inputs=tuple(getattr(args, "bytes_input", None) or ()),
        pixel_range=getattr(args, "pixel_range", None),
        inputs_file=str(args.inputs_file) if getattr(args, "inputs_file", None) else None,
        images=str(args.images) if getattr(args, "images", None) else None,
    )


def preflight(
    client: TFServingClient, plans: dict[str, EncodingPlan], batch: int, grpc_target: str | None = None
) -> dict[str, dict[str, Any]]:
    """One request per encoding, checked; ConfigError with the server's text on the first failure.

    gRPC encodings go to ``grpc_target`` (``HOST:PORT``). Returns per encoding what the check saw
    (body bytes, raw value bytes, outputs).
    """
    seen: dict[str, dict[str, Any]] = {}
    grpc_client: TFServingClient | None = None
    try:
        for name, planned in plans.items():
            encoding = planned.encoding
            sender = client
            if encoding.protocol == "grpc":
                if grpc_target is None:
                    raise ConfigError(f"--encodings {name} speaks gRPC: give --grpc-target HOST:PORT")
                grpc_client = grpc_client or TFServingGrpcClient(grpc_target, client.model_name, client.version)
                sender, encoding = grpc_client, encoding.with_model(client.model_name, client.version)
            seen[name] = _check_one(sender, name, encoding, planned, batch)
    finally:
        if grpc_client is not None:
            grpc_client.close()
    return seen


def _check_one(
    client: TFServingClient, name: str, encoding: Encoding, planned: EncodingPlan, batch: int
) -> dict[str, Any]:
    plan = planned.plan
    shown = plan.signature_name or "serving_default"
    values = InputBatches(plan).batch(batch)
    body = encoding.encode(values)
    try:
        response = client.predict(body, encoding.headers(), signature_name=plan.signature_name)
    except PredictError as exc:
        text = " ".join(str(exc).split())  # TensorFlow's messages span lines; the error is one
        raise ConfigError(
            f"preflight: {name} batch {batch} to signature '{shown}' answered {text}; nothing was measured"
        ) from None
    try:
        client.check_response(response, batch, plan.signature_name)
    except ServerError as exc:  # a 200 whose predictions do not match the request or the metadata
        raise ConfigError(f"preflight: {name} batch {batch} to signature '{shown}': {exc}") from None
    outputs = response.get("predictions", response.get("outputs"))
    return {
        "batch": batch,
        "payload_bytes": len(body),
        "value_bytes": value_bytes(values),
        "answered": "predictions" if "predictions" in response else "outputs",
        "rows": len(outputs) if isinstance(outputs, list) else None,
    }


def prepare_inputs(
    client: TFServingClient,
    encodings: tuple[str, ...],
    batch_sizes: tuple[int, ...],
    options: InputOptions,
    signature_name: str = "",
    grpc_target: str | None = None,
) -> tuple[dict[str, EncodingPlan], dict[str, Any]]:
    """Resolve every encoding's signature and plan, preflight them; returns (plans, meta.json's ``signature``).

    The signatures come from ``client``'s (REST) metadata; gRPC encodings' checks go to ``grpc_target``.
    """
    plans = resolve_plans(client, encodings, options, signature_name)
    check_batch_sizes(plans, batch_sizes)
    checks = preflight(client, plans, min(batch_sizes), grpc_target)
    meta = {
        "by_encoding": {
            name: {
                "signature_name": p.plan.signature_name or "serving_default",
                "inputs": [asdict(i) for i in p.plan.inputs],
                "describe": p.plan.describe(),
                "preflight": checks[name],
            }
            for name, p in plans.items()
        },
        "options": asdict(options),
        "inputs_file": options.inputs_file,
        "describe": sorted({p.plan.describe() for p in plans.values()}),
    }
    return plans, meta


def save_plans(run_dir: Path, plans: dict[str, EncodingPlan]) -> str:
    """Write the plans for the run's Locust processes; returns the file's path."""
    return str(write_plan_file(run_dir / PLAN_FILE, plans))
