"""Run directories written the way a sweep or a capacity search leaves them, for report tests.

Rows go through the real ``RecordWriter`` into a real run directory, so the reports read exactly
what a sweep writes; the latencies are seeded and known.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, cast

import numpy as np

from bench.payloads.encodings import protocol_of
from bench.store import provenance, runs
from bench.store.records import RecordWriter, RequestRecord

ENCODINGS = ("row-orjson", "b64-png")
BATCHES = (1, 4, 16)


def write_run(
    out: Path,
    *,
    requests_per_cell: int = 60,
    incomplete: str | None = None,
    server_kind: str = "embedded",
    saturated_cell: str | None = None,
    server_metrics: bool = False,
    server_batch_metric: bool = True,
    seed: int = 0,
    scale: float = 1.0,
    errors: bool = True,
    encodings: tuple[str, ...] = ENCODINGS,
) -> Path:
    """A run dir with requests.csv (RecordWriter rows) and meta.json cells, like a sweep writes."""
    rng = np.random.default_rng(seed)
    run_dir = runs.new_run_dir(out)
    cells = []
    t = 1_700_000_000.0
    with RecordWriter(run_dir / runs.REQUESTS_FILE) as writer:
        for enc in encodings:
            for batch in BATCHES:
                cell = runs.cell_name(batch, enc)
                base_ms = scale * (2.0 + 0.8 * batch * (3 if enc == "b64-png" else 1))
                for i in range(requests_per_cell):
                    failed = errors and i % 25 == 24
                    latency = float(base_ms * rng.lognormal(0.0, 0.3))
                    writer.write(
                        RequestRecord(
                            t_start=t,
                            latency_ms=latency,
                            status=500 if failed else 200,
                            batch=batch,
                            encoding=enc,
                            payload_bytes=batch * (200_000 if enc == "row-orjson" else 40_000),
                            encode_us=float(batch * (900 if enc == "row-orjson" else 3000)),
                            response_bytes=120 * batch,
                            error="HTTP 500: boom" if failed else "",
                            cell=cell,
                            protocol=protocol_of(enc),
                        )
                    )
                    t += latency / 1000.0
                entry: dict[str, Any] = {
                    "cell": cell,
                    "batch": batch,
                    "encoding": enc,
                    "status": "done",
                    "merged": True,
                    "locust_requests": requests_per_cell,
                    "client_cpu_pct": 97.0 if cell == saturated_cell else 35.0,
                    "warmup_excluded": 5,
                }
                if server_metrics:
                    entry["server"] = {
                        "requests": requests_per_cell,
                        "latency_mean_ms": base_ms * 0.6,
                        "latency_p50_ms": base_ms * 0.55,
                        "latency_p99_ms": base_ms,
                        "runtime_mean_ms": base_ms * 0.3,
                    }
                    if server_batch_metric:
                        entry["server"]["batch_size_mean"] = float(batch)
                cells.append(entry)
    runs.update_meta(
        run_dir,
        **provenance.collect_environment(),
        config={"batch_sizes": list(BATCHES), "encodings": list(ENCODINGS), "load": "closed, 2 users"},
        target={
            "host": "http://127.0.0.1:1",
            "server_kind": server_kind,
            "model_name": "classifier",
            "model_version": "1",
        },
        cells=cells,
        incomplete=incomplete is not None,
        incomplete_reason=incomplete,
    )
    return run_dir


PROBES = {
    "b1-row-orjson@160rps": (160.0, 160.0, 0.0, 12.0),
    "b1-row-orjson@20rps": (20.0, 20.0, 0.0, 3.0),
    "b1-row-orjson@640rps": (640.0, 300.0, 0.9, 21.0),  # server past its capacity
    "b1-row-orjson@10rps": (10.0, 10.0, 0.0, 2.0),
    "b16-row-orjson@80rps": (80.0, 80.0, 0.2, 10.0),  # late, records from before causes were kept
    "b16-row-orjson@45rps": (45.0, 44.0, 0.3, 97.0),  # client out of CPU
    "b16-row-orjson@41.25rps#9": (41.25, 41.25, 0.0, 9.0),  # a repeated rate gets "#n"
    "b4-row-orjson@100rps": (100.0, 100.0, 0.0, 8.0),
}
# Why the late sends of a probe were late (lag_cause): the user waited on the server (busy), the
# generator fell behind (idle), or not recorded ("", older records).
CAUSES = {"b1-row-orjson@640rps": "busy", "b16-row-orjson@45rps": "idle", "b16-row-orjson@80rps": ""}
NATURAL_ORDER = [
    "b1-row-orjson@10rps",
    "b1-row-orjson@20rps",
    "b1-row-orjson@160rps",
    "b1-row-orjson@640rps",
    "b4-row-orjson@100rps",
    "b16-row-orjson@41.25rps#9",
    "b16-row-orjson@45rps",
    "b16-row-orjson@80rps",
]


def write_capacity_run(out: Path, requests_per_probe: int = 150) -> Path:
    run_dir = runs.new_run_dir(out)
    cells = []
    t = 1_700_000_000.0
    with RecordWriter(run_dir / runs.REQUESTS_FILE) as writer:
        for cell, (offered, achieved, late_share, cpu) in PROBES.items():
            batch = int(cast("re.Match[str]", re.match(r"b(\d+)-", cell))[1])
            late_every = round(1 / late_share) if late_share else 0
            for i in range(requests_per_probe):
                # A server behind the offered rate builds a backlog; otherwise late sends are stalls.
                late = late_every and i % late_every == 0
                lag = (50.0 + i if achieved < offered else 20.0) if late else 0.0
                cause = CAUSES.get(cell, "idle") if late else ("" if cell in CAUSES and not CAUSES[cell] else "idle")
                writer.write(
                    RequestRecord(
                        t_start=t + i / achieved,
                        latency_ms=5.0 + batch + lag,
                        status=200,
                        batch=batch,
                        encoding="row-orjson",
                        payload_bytes=200_000 * batch,
                        encode_us=900.0 * batch,
                        response_bytes=120 * batch,
                        cell=cell,
                        send_lag_ms=lag,
                        lag_cause=cause,
                    )
                )
            t += requests_per_probe / achieved + 1.0
            cells.append(
                {
                    "cell": cell,
                    "batch": batch,
                    "encoding": "row-orjson",
                    "status": "done",
                    "merged": True,
                    "locust_requests": requests_per_probe,
                    "client_cpu_pct": cpu,
                    "warmup_excluded": 0,
                    # A server past its capacity leaves sends due unanswered at the stop.
                    "unanswered": round(requests_per_probe * (offered / achieved - 1)) if achieved < offered else 0,
                }
            )
    runs.update_meta(
        run_dir,
        command="capacity",
        config={"batch_sizes": [1, 4, 16], "encodings": ["row-orjson"], "arrival": "constant"},
        target={"host": "http://127.0.0.1:1", "server_kind": "embedded", "model_name": "classifier"},
        cells=cells,
    )
    return run_dir
