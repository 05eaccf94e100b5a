"""``tfsbench inspect``: what a served model takes, which encodings can send it, and how many bytes.

One screen per model: its versions and their states, each signature's inputs and outputs (name,
numpy dtype name, shape), the encodings that apply (and why the others do not), and the body
bytes per encoding at batch 1, 16 and 64, encoded from the same input plan a sweep would use
(so ``--input-shape`` and the other input flags count here too). ``--json`` prints the same as
one JSON document.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from bench.commands.preflight import input_options_from_args
from bench.errors import ConfigError
from bench.payloads.encodings import ENCODINGS, PROTOCOLS, protocol_of
from bench.payloads.input_plan import InputBatches, InputOptions, plan_inputs
from bench.payloads.specs import InputSpec
from bench.payloads.tensors import numpy_name
from bench.target.client import TFServingClient

BATCHES = (1, 16, 64)
# Above this many bytes at batch 16, batch 64 is extrapolated (bodies grow linearly with the batch)
# instead of encoded: a float32 224x224x3 row-json body at 64 is about 200 MB and 10 s of CPU.
EXACT_LIMIT_BYTES = 16 * 1024 * 1024


def _shape(spec: InputSpec) -> str:
    if not spec.shape:
        return "unknown rank"
    return "[" + ",".join("-1" if d is None else str(d) for d in spec.shape) + "]"


def _tensor(spec: InputSpec) -> dict[str, Any]:
    return {"name": spec.name, "dtype": numpy_name(spec.dtype), "shape": _shape(spec)}


def _payload_bytes(specs: list[InputSpec], options: InputOptions, signature: str) -> dict[str, Any]:
    """Per applicable encoding, body bytes at each of BATCHES (``estimated``: which were extrapolated)."""
    try:
        plan = plan_inputs(specs, options, signature)
    except ConfigError as exc:
        return {"unresolved": str(exc)}
    batches = InputBatches(plan)
    sizes: dict[str, dict[str, int]] = {}
    estimated: list[str] = []
    for name, encoding in ENCODINGS.items():
        if encoding.refusal(specs):
            continue
        aimed = encoding.with_signature(signature)
        row: dict[str, int] = {}
        for batch in BATCHES:
            if batch == BATCHES[-1] and row[str(BATCHES[1])] > EXACT_LIMIT_BYTES:
                small, large = row[str(BATCHES[0])], row[str(BATCHES[1])]
                per_example = (large - small) / (BATCHES[1] - BATCHES[0])
                row[str(batch)] = round(large + per_example * (batch - BATCHES[1]))
                estimated.append(name)
                continue
            row[str(batch)] = len(aimed.encode(batches.batch(batch)))
        sizes[name] = row
    return {"plan": plan.describe(), "bytes": sizes, "estimated_64": estimated}


def inspect_model(client: TFServingClient, options: InputOptions, only: str = "") -> dict[str, Any]:
    """Everything ``tfsbench inspect`` shows, as plain data."""
    status = client.status()
    signatures = client.signatures()
    if only and only not in signatures:
        raise ConfigError(
            f"model '{client.model_name}' has no signature '{only}' (has: {', '.join(sorted(signatures))})"
        )
    out: dict[str, Any] = {
        "host": client.base_url,
        "model_name": client.model_name,
        "versions": [
            {"version": str(v.get("version")), "state": v.get("state")} for v in status.get("model_version_status", [])
        ],
        "signatures": {},
    }
    for name in sorted(signatures):
        if only and name != only:
            continue
        specs = client.input_specs(name)
        outputs = client.output_specs(name)
        refused = {enc: reason for enc, e in ENCODINGS.items() if (reason := e.refusal(specs))}
        signature = "" if name == "serving_default" else name
        out["signatures"][name] = {
            "inputs": [_tensor(s) for s in specs],
            "outputs": [_tensor(s) for s in outputs.values()],
            "encodings": [enc for enc in ENCODINGS if enc not in refused],
            "refused": refused,
            "payload": _payload_bytes(specs, options, signature),
        }
    return out


def format_inspection(doc: dict[str, Any]) -> str:
    versions = ", ".join(f"{v['version']} {v['state']}" for v in doc["versions"]) or "none"
    lines = [f"model '{doc['model_name']}' at {doc['host']}: versions {versions}"]
    for name, sig in doc["signatures"].items():
        lines.append("")
        lines.append(f"signature {name}")
        tensors = [("input", t) for t in sig["inputs"]] + [("output", t) for t in sig["outputs"]]
        width = max(len(t["name"]) for _, t in tensors) if tensors else 0
        for kind, t in tensors:
            lines.append(f"  {kind:6} {t['name']:<{width}}  {t['dtype']:<8} {t['shape']}")
        by_protocol = {p: [e for e in sig["encodings"] if protocol_of(e) == p] for p in PROTOCOLS}
        for protocol, applicable in by_protocol.items():
            if applicable or protocol == "rest":
                lines.append(f"  encodings ({protocol}): {', '.join(applicable) or 'none'}")
        reasons = sorted(set(sig["refused"].values()))
        for reason in reasons[:3]:
            names = ", ".join(e for e, r in sig["refused"].items() if r == reason)
            lines.append(f"    not {names}: {reason}")
        payload = sig["payload"]
        if "unresolved" in payload:
            lines.append(f"  payload bytes: {payload['unresolved']}")
            continue
        if not payload["bytes"]:
            continue
        lines.append(f"  filled as {payload['plan']}")
        lines.append(f"  {'payload bytes':<17}" + "".join(f"{'b=' + str(b):>14}" for b in BATCHES))
        for enc, row in payload["bytes"].items():
            mark = "~" if enc in payload["estimated_64"] else ""
            cells = [f"{row[str(b)]:>14,}" for b in BATCHES[:-1]] + [f"{mark + format(row[str(BATCHES[-1])], ','):>14}"]
            lines.append(f"  {enc:<17}" + "".join(cells))
        if payload["estimated_64"]:
            lines.append("  (~: extrapolated from batch 1 and 16)")
    return "\n".join(lines)


def run_inspect(args: argparse.Namespace) -> int:
    client = TFServingClient(args.host, args.model_name, args.model_version)
    doc = inspect_model(client, input_options_from_args(args), args.signature_name or "")
    print(json.dumps(doc, indent=2) if args.json else format_inspection(doc))
    return 0
