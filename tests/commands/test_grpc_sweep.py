"""gRPC beside REST end to end: real Locust and a real sweep against the embedded server's two front ends.

One server process for the module (``bench.commands.demo.embedded_server``: REST and gRPC on free
loopback ports, as ``tfsbench demo`` starts it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.commands.demo import RunningServer, embedded_server
from bench.store import runs
from bench.store.records import read_records
from bench.target.replicas import replica_name
from reports.compare import comparison_table
from reports.data import load_run_data
from tests.helpers.paths import REPO

TIMEOUT_S = 120


@pytest.fixture(scope="module")
def server(model_base_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with embedded_server(model_base_path, tmp_path_factory.mktemp("grpc-server")) as running:
        yield running


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TFSBENCH_", "LOCUST_"))}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "3"}


def run_locust(server: RunningServer, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    command = [
        sys.executable, "-m", "locust", "-f", "locustfiles/predict.py", "--headless", "--host", server.url,
        "--grpc-target", server.grpc_target, "-u", "2", "-r", "100", "--records", str(tmp_path / "requests.csv"),
        "--json-file", str(tmp_path / "stats"), "--loglevel", "WARNING", *args,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    stats_file = tmp_path / "stats.json"
    stats = {e["name"]: e for e in json.loads(stats_file.read_text())} if stats_file.exists() else {}
    return done, stats


def test_a_mixed_locust_run_records_every_request_of_both_protocols(server: RunningServer, tmp_path: Path) -> None:
    done, stats = run_locust(
        server, tmp_path, "--encodings", "row-orjson,grpc-tensor-content,grpc-bytes-png", "--batch-sizes", "2",
        "--arrival", "constant", "--rate", "40", "--warmup", "1", "--max-requests", "30", "-t", "60s",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    frame = read_records(tmp_path / "requests.csv")
    # Every request Locust counted, of either protocol, is one row, and nothing else is.
    assert len(frame) == sum(e["num_requests"] for e in stats.values()) >= 20
    for name, entry in stats.items():
        encoding = name.rsplit(" ", 1)[1]
        rows = frame[frame["encoding"] == encoding]
        assert len(rows) == entry["num_requests"], name
        assert entry["method"] == ("grpc" if encoding.startswith("grpc-") else "POST")
        assert set(rows["protocol"]) == {"grpc" if encoding.startswith("grpc-") else "rest"}
        # The target column names where each protocol went: the gRPC target, or --host's host:port.
        assert set(rows["target"]) == {server.grpc_target if encoding.startswith("grpc-") else replica_name(server.url)}
    assert set(frame["encoding"]) == {"row-orjson", "grpc-tensor-content", "grpc-bytes-png"}
    assert (frame["status"] == 200).all()
    assert (frame["error"] == "").all()
    grpc = frame[frame["protocol"] == "grpc"]
    assert (grpc["payload_bytes"] > 0).all()
    assert (grpc["encode_us"] > 0).all()
    assert (grpc["response_bytes"] > 0).all()
    # Open model: latency counts from the intended send, lateness is attributed, as for REST.
    assert (frame["latency_ms"] >= frame["send_lag_ms"]).all()
    assert set(frame["lag_cause"]) <= {"busy", "idle", ""}


def test_grpc_errors_keep_rests_status_and_name_the_code(server: RunningServer, tmp_path: Path) -> None:
    done, stats = run_locust(
        server, tmp_path, "--encodings", "grpc-int-val", "--model-name", "nope", "--max-requests", "6",
        "-t", "20s",
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr[-3000:]
    frame = read_records(tmp_path / "requests.csv")
    assert len(frame) == sum(e["num_requests"] for e in stats.values()) >= 6
    assert (frame["status"] == 404).all()
    assert frame["error"].str.startswith("gRPC NOT_FOUND: ").all()


def sweep(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", "sweep", *args], capture_output=True, text=True, timeout=240, env=_env()
    )


def test_a_mixed_sweep_and_its_report(server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    proc = sweep(
        "--host", server.url, "--grpc-target", server.grpc_target, "--batch-sizes", "4",
        "--encodings", "row-orjson,grpc-tensor-content", "--users", "2", "--requests", "20", "--duration", "20s",
        "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = runs.load_run(out / runs.LATEST)
    assert not run.incomplete
    assert run.target["grpc_target"] == server.grpc_target
    frame = read_records(run.requests_path)
    for cell in run.cells:
        rows = frame[frame["cell"] == cell["cell"]]
        assert cell["status"] == "done"
        assert len(rows) == cell["locust_requests"] >= 20
        assert set(rows["protocol"]) == {"grpc" if cell["encoding"].startswith("grpc-") else "rest"}
    data = load_run_data(run.path)
    protocols = dict(zip(data.summary["encoding"], data.summary["protocol"], strict=True))
    assert protocols == {"row-orjson": "rest", "grpc-tensor-content": "grpc"}
    html = (run.path / "report.html").read_text(encoding="utf-8")
    assert "grpc-tensor-content" in html
    assert "row-orjson" in html
    # One server answering on two ports is not two replicas: no per-replica section.
    assert data.replicas.empty
    assert 'id="replica-table"' not in html
    assert (run.path / "figures" / "latency_vs_payload_bytes.png").is_file()
    assert (run.path / "figures" / "throughput_vs_batch.png").is_file()
    # tfsbench compare across protocols: the run against itself pairs cells by (batch, encoding);
    # its REST half against its gRPC half pairs them by batch size.
    assert len(comparison_table(data, data)) == 2


def test_sweep_says_in_one_line_when_the_grpc_target_does_not_answer(server: RunningServer, tmp_path: Path) -> None:
    proc = sweep(
        "--host", server.url, "--grpc-target", "127.0.0.1:1", "--batch-sizes", "1", "--encodings",
        "grpc-tensor-content", "--requests", "5", "--out", str(tmp_path / "runs"),
    )  # fmt: skip
    assert proc.returncode != 0
    assert "cannot reach TF Serving's gRPC at 127.0.0.1:1" in proc.stderr
    assert "Traceback" not in proc.stderr
