"""The report's run metadata as a table a person reads: one row per fact, values in human units.

meta.json keeps everything as recorded (``None``, booleans, lists, bytes); this turns it into
rows such as ("memory", "23.5 GiB") or ("signatures", "serving_bytes, serving_default"),
leaves out TensorFlow's internal signatures (``__saved_model_init_op``), names the TensorFlow
that served the model, and ends with whatever meta.json holds that no row above covered.
"""

from __future__ import annotations

import shlex
from datetime import datetime
from typing import Any

from bench.store.runs import Run

_COVERED = frozenset(
    {"schema", "run_id", "created_utc", "finished_utc", "incomplete", "incomplete_reason", "error", "command", "argv"}
    | {"config", "target", "versions", "git", "machine", "cells", "slo", "docker"}
)
_CONFIG_LABELS = {
    "load": "load",
    "batch_sizes": "batch sizes",
    "encodings": "encodings",
    "duration_s": "time per cell",
    "requests": "requests per cell",
    "warmup": "warm-up requests per user",
    "processes": "Locust processes per cell",
    "pool_size": "pre-encoded bodies per cell",
    "images": "images",
    "stability_pct": "stability rule (%)",
    "signature_name": "signature asked for",
}


def human(value: Any) -> str:
    """A meta.json value as text: none -> "–", booleans yes/no, lists comma-separated."""
    if value is None or value == "":
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(human(v) for v in value) if value else "–"
    if isinstance(value, dict):
        return "; ".join(f"{k} {human(v)}" for k, v in value.items() if v not in (None, "", [], {}))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def human_bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def _duration(meta: dict[str, Any]) -> str:
    try:
        start = datetime.fromisoformat(str(meta["created_utc"]))
        end = datetime.fromisoformat(str(meta["finished_utc"]))
    except (KeyError, ValueError):
        return ""
    return f" ({(end - start).total_seconds():.0f} s)"


def served_by_tensorflow(meta: dict[str, Any]) -> str:
    """The TensorFlow that ran the model: this environment's for the embedded server, else what is known."""
    target = meta.get("target") or {}
    versions = meta.get("versions") or {}
    local = next((f"{name} {versions[name]}" for name in ("tensorflow", "tensorflow-cpu") if versions.get(name)), "")
    if target.get("server_kind") == "embedded":
        return f"{local} (the embedded server's)" if local else "–"
    docker = meta.get("docker") or {}
    if docker.get("image"):
        return f"the image's: {docker['image']}"
    if target.get("server_version"):
        return f"server reports {target['server_version']}"
    return "not reported by the server"


def metadata_rows(run: Run) -> list[tuple[str, str]]:
    meta = run.meta
    target = meta.get("target") or {}
    config = meta.get("config") or {}
    rows: list[tuple[str, str]] = [
        ("command", "tfsbench " + shlex.join(str(a) for a in meta.get("argv") or [meta.get("command", "?")])),
        (
            "run",
            f"{meta.get('run_id', run.run_id)}, {human(meta.get('created_utc'))} to "
            f"{human(meta.get('finished_utc'))}{_duration(meta)}",
        ),
        ("status", f"incomplete: {meta.get('incomplete_reason') or '?'}" if meta.get("incomplete") else "complete"),
    ]
    if meta.get("error"):
        rows.append(("error", human(meta["error"])))
    if (meta.get("slo") or {}).get("text"):
        rows.append(("SLO", str(meta["slo"]["text"])))
    server = " ".join(str(v) for v in (target.get("server_kind"), target.get("server_version")) if v)
    states = ", ".join(
        f"v{s.get('version')} {s.get('state')}" for s in target.get("model_version_status") or [] if isinstance(s, dict)
    )
    signatures = [s for s in target.get("signatures") or [] if not str(s).startswith("__")]
    rows += [
        ("target", human(target.get("host"))),
        ("server", f"{server or '?'} (from {target.get('server_kind_source') or '?'})"),
        (
            "model",
            f"{human(target.get('model_name'))} v{human(target.get('model_version'))}"
            + (f" ({states})" if states else ""),
        ),
        ("signatures", human(signatures)),
        ("TensorFlow that served", served_by_tensorflow(meta)),
        ("Prometheus", human(target.get("prometheus")) if target.get("prometheus") else "not served"),
    ]
    if meta.get("docker"):
        rows.append(("container", human(meta["docker"])))
    rows += [
        (label, human(config[key]) + (" s" if key.endswith("_s") and config[key] is not None else ""))
        for key, label in _CONFIG_LABELS.items()
        if key in config
    ]
    versions = meta.get("versions") or {}
    rows.append(("software", ", ".join(f"{k} {v}" for k, v in versions.items() if v)))
    git = meta.get("git") or {}
    if git:
        rev = str(git.get("revision") or "?")[:12]
        rows.append(("git", f"{rev}{' (uncommitted changes)' if git.get('dirty') else ''}"))
    machine = dict(meta.get("machine") or {})
    if machine:
        memory = machine.pop("memory_bytes", None)
        cpus = f"{machine.pop('cpu_count', '?')} CPUs ({machine.pop('cpu_usable', '?')} usable)"
        parts = [str(machine.pop(k)) for k in ("hostname", "cpu_model", "platform") if machine.get(k)]
        parts.insert(2, cpus)
        if isinstance(memory, int | float):
            parts.append(f"{human_bytes(memory)} memory")
        rows.append(("machine", ", ".join(parts)))
    rows += [(str(k), human(v)) for k, v in meta.items() if k not in _COVERED]
    return rows
