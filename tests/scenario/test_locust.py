"""locustfiles/predict.py run by real Locust in subprocesses against loopback servers with known timing.

Locust monkey-patches the process with gevent on import, so it never runs inside pytest: each
test starts ``python -m locust`` with a bounded --run-time and reads what it wrote (records,
the load side-car, Locust's --json-file stats).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench.payloads.encodings import ENCODING_NAMES
from bench.ports import free_port
from bench.store.load_stats import read_load_stats
from bench.store.records import read_records
from bench.store.summary import summarize
from tests.helpers.loopback_servers import LoopbackServer
from tests.helpers.paths import REPO

LOCUSTFILE = "locustfiles/predict.py"
TIMEOUT_S = 90


def run_locust(host: str, tmp_path: Path, *args: str, run_time: str | None = "4s", users: int = 2) -> dict:
    """Run a headless Locust; returns {"rc", "stderr", "stats" (per name), "records" path}."""
    records = tmp_path / "requests.csv"
    stats_file = tmp_path / "stats.json"
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        LOCUSTFILE,
        "--headless",
        "--host",
        host,
        "-u",
        str(users),
        "-r",
        "100",
        "--records",
        str(records),
        "--json-file",
        str(tmp_path / "stats"),
        "--loglevel",
        "WARNING",
        *(["-t", run_time] if run_time else []),
        *args,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TFSBENCH_", "LOCUST_"))}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    stats = {}
    if stats_file.exists():
        stats = {entry["name"]: entry for entry in json.loads(stats_file.read_text())}
    return {"rc": done.returncode, "stderr": done.stderr, "stats": stats, "records": records}


def locust_requests(stats: dict) -> int:
    return sum(entry["num_requests"] for entry in stats.values())


def test_help_lists_the_scenario_options() -> None:
    done = subprocess.run(
        [sys.executable, LOCUSTFILE, "--help"], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    for flag in (
        "--model-name",
        "--model-version",
        "--signature-name",
        "--batch-sizes",
        "--encodings",
        "--images",
        "--pool-size",
        "--warmup",
        "--arrival {closed,poisson,constant}",
        "--rate",
        "--records",
        "--cell",
        "--shape-steps",
        "TFSBENCH_BATCH_SIZES",
    ):
        assert flag in done.stdout
    assert "--headless" in done.stdout  # Locust's own options are there too


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--arrival", "poisson"], "--arrival poisson needs a positive --rate", id="open-without-rate"),
        pytest.param(["--encodings", "row-xml"], "row-xml", id="unknown-encoding"),
        pytest.param(["--batch-sizes", "1,0"], "'0' must be a positive integer", id="bad-batch"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_locust("http://127.0.0.1:9", tmp_path, *args, run_time="1s")
    assert result["rc"] == 2
    assert message in result["stderr"]
    assert "Traceback" not in result["stderr"]
    assert not result["records"].exists()


def test_known_delay_is_measured_and_every_request_is_recorded(tmp_path: Path) -> None:
    with LoopbackServer(delay_s=0.040) as server:
        result = run_locust(
            server.url, tmp_path, "--batch-sizes", "1", "--encodings", "b64-png", "--warmup", "3", "--cell", "d40"
        )
        served = server.requests
    assert result["rc"] == 0, result["stderr"]
    frame = read_records(result["records"])
    assert len(frame) == locust_requests(result["stats"]) > 20, result["stderr"][-3000:]
    assert set(result["stats"]) == {"predict b=1 b64-png"}
    entry = result["stats"]["predict b=1 b64-png"]
    assert entry["num_failures"] == 0
    # Locust's "size" column is the request body size, so the web UI compares payloads.
    assert entry["total_content_length"] == frame["payload_bytes"].sum()
    median = float(np.median(frame["latency_ms"]))
    assert 40.0 <= median <= 48.0
    assert (frame["status"] == 200).all()
    assert (frame["cell"] == "d40").all()
    # Warm-up: sent (2 users x 3), never recorded, counted in the side-car.
    load = read_load_stats(result["records"])
    assert load is not None
    assert load.warmup_by_cell == {"d40": 6}
    assert load.finished
    assert served >= len(frame) + 6


def test_open_model_overload_grows_latency_and_counts_late_sends(tmp_path: Path) -> None:
    # The server handles one request at a time, 50 ms each (20 req/s); we offer 40 req/s.
    with LoopbackServer(service_s=0.050) as server:
        result = run_locust(
            server.url,
            tmp_path,
            "--arrival",
            "constant",
            "--rate",
            "40",
            "--encodings",
            "row-fast",
            "--cpu-warn-pct",
            "0.5",
            run_time="7s",
            users=8,
        )
    assert result["rc"] == 0, result["stderr"]
    frame = read_records(result["records"]).sort_values("t_start")
    thirds = np.array_split(frame["latency_ms"].to_numpy(), 3)
    assert np.median(thirds[2]) > 2 * np.median(thirds[0])
    summary = summarize(frame)
    assert summary["late_sends"].sum() > len(frame) // 3
    # Every user waited on the one-at-a-time server: the lateness is the server's, not the generator's.
    assert summary["late_busy"].iloc[0] > 0.9 * summary["late_sends"].iloc[0]
    assert summary["late_idle"].iloc[0] <= 0.05 * len(frame)
    # The sends still owed when the run stopped (users behind their slots) are counted in the side-car.
    owed = read_load_stats(result["records"])
    assert owed is not None
    assert owed.unanswered("locust") > 0
    assert owed.stopping_unix_s > frame["t_start"].max() - 1.0
    # The uncorrected latency (from the actual send) hides the queue; the recorded one does not.
    assert summary["p99_ms"].iloc[0] > 2 * summary["p99_uncorrected_ms"].iloc[0]
    # Locust's own stats carry the corrected latency too.
    entry = result["stats"]["predict b=1 row-fast"]
    assert entry["total_response_time"] / entry["num_requests"] == pytest.approx(frame["latency_ms"].mean(), rel=0.02)
    # A deliberately low threshold makes the CPU monitor fire: warning on stderr + marker.
    assert "load generator CPU saturated" in result["stderr"]
    load = read_load_stats(result["records"])
    assert load is not None
    assert load.saturated


def test_encode_inline_puts_the_encoding_inside_the_measured_request(tmp_path: Path) -> None:
    # Batch 4 with stdlib json (the slow encoder): each body is encoded in the timed path, and its
    # cost is both recorded per row and part of the latency Locust and the records report.
    with LoopbackServer(delay_s=0.002) as server:
        result = run_locust(
            server.url, tmp_path, "--encode-inline", "--encodings", "row-json", "--batch-sizes", "4",
            "--pool-size", "2", run_time="3s", users=1,
        )  # fmt: skip
    assert result["rc"] == 0, result["stderr"]
    frame = read_records(result["records"])
    assert len(frame) == locust_requests(result["stats"]) > 5
    encode_ms = frame["encode_us"].to_numpy() / 1000.0
    assert (encode_ms > 1.0).all()  # json on tolist() of 4 images takes tens of ms, measured each time
    assert frame["encode_us"].nunique() > 1  # timed per request, not a pool's one figure
    # Latency = encode + request: never less than the encode time plus the server's 2 ms.
    assert (frame["latency_ms"].to_numpy() >= encode_ms + 2.0).all()
    entry = result["stats"]["predict b=4 row-json"]
    assert entry["total_response_time"] / entry["num_requests"] == pytest.approx(frame["latency_ms"].mean(), rel=0.02)


def test_a_stall_shows_in_p99_and_max_in_the_open_model(tmp_path: Path) -> None:
    with LoopbackServer(delay_s=0.005, stall_at=30, stall_s=2.0) as server:
        result = run_locust(
            server.url, tmp_path, "--arrival", "poisson", "--rate", "20", "--encodings", "row-fast", users=6,
            run_time="6s",
        )  # fmt: skip
    assert result["rc"] == 0, result["stderr"]
    frame = read_records(result["records"])
    summary = summarize(frame).iloc[0]
    assert summary["max_ms"] >= 1900
    assert summary["p99_ms"] >= 1000
    # Not just the few requests in flight: the sends that were due during the stall wait too.
    assert (frame["latency_ms"] > 500).sum() >= 12


@pytest.mark.parametrize(
    ("server_kwargs", "message"),
    [
        pytest.param(
            {"status": 400, "error": 'Serving signature name: "nope" not found in signature def'},
            'HTTP 400: Serving signature name: "nope" not found in signature def',
            id="error-body",
        ),
        pytest.param({"extra_rows": 1}, "expected 1 predictions, got 2", id="wrong-count"),
    ],
)
def test_bad_responses_are_failures_with_the_servers_message(tmp_path: Path, server_kwargs: dict, message: str) -> None:
    with LoopbackServer(**server_kwargs) as server:
        result = run_locust(server.url, tmp_path, "--encodings", "row-fast", run_time="2s", users=1)
    assert result["rc"] == 1  # Locust's exit code when requests failed
    frame = read_records(result["records"])
    assert len(frame) == locust_requests(result["stats"]) > 0
    assert (frame["error"] == message).all()
    entry = result["stats"]["predict b=1 row-fast"]
    assert entry["num_failures"] == entry["num_requests"]


def test_processes_records_are_merged_without_loss(tmp_path: Path) -> None:
    with LoopbackServer(delay_s=0.010) as server:
        port = str(free_port())  # Locust's default master port 5557 would collide with parallel runs
        result = run_locust(
            server.url, tmp_path, "--processes", "2", "--master-port", port, "--master-bind-port", port,
            "--encodings", "row-fast", "--warmup", "1", users=4,
        )  # fmt: skip
    assert result["rc"] == 0, result["stderr"]
    frame = read_records(result["records"])
    assert len(frame) == locust_requests(result["stats"]) > 20, result["stderr"][-3000:]
    assert not list(tmp_path.glob("requests.*.csv"))  # worker files merged and removed
    load = read_load_stats(result["records"])
    assert load is not None
    assert load.processes == 2
    assert load.warmup_excluded == 4


def test_constant_arrivals_of_all_users_and_processes_are_evenly_spaced(tmp_path: Path) -> None:
    # 8 users over 2 processes at 40 req/s: the intended sends (t_start) of all of them merge
    # into one stream 25 ms apart, not clumps that repeat every 200 ms (random phases did that).
    with LoopbackServer(delay_s=0.002) as server:
        port = str(free_port())
        result = run_locust(
            server.url, tmp_path, "--processes", "2", "--master-port", port, "--master-bind-port", port,
            "--arrival", "constant", "--rate", "40", "--encodings", "row-fast", users=8, run_time="5s",
        )  # fmt: skip
    assert result["rc"] == 0, result["stderr"]
    starts = np.sort(read_records(result["records"])["t_start"].to_numpy())
    # Intended times, not measured ones: away from the ramp-up and the cut at the end every slot is there.
    steady = starts[(starts > starts[0] + 1.0) & (starts < starts[-1] - 1.0)]
    assert len(steady) > 40, result["stderr"][-3000:]
    assert np.diff(steady) == pytest.approx(np.full(len(steady) - 1, 0.025), abs=1e-4)


def test_shape_steps_walk_through_batch_sizes(tmp_path: Path) -> None:
    with LoopbackServer(delay_s=0.010) as server:
        result = run_locust(
            server.url,
            tmp_path,
            "--shape-steps",
            "batch=1,2",
            "--step-time",
            "2s",
            "--encodings",
            "row-fast",
            "--cell",
            "s",
            run_time=None,  # the shape ends the run after its steps
        )
    assert result["rc"] == 0, result["stderr"]
    frame = read_records(result["records"])
    assert set(frame["cell"]) == {"s/b=1", "s/b=2"}
    assert (frame.loc[frame["cell"] == "s/b=2", "batch"] == 2).all()
    assert (frame.loc[frame["cell"] == "s/b=1", "batch"] == 1).all()
    assert len(frame) == locust_requests(result["stats"])


def test_web_ui_shows_the_options_and_runs_with_form_values(tmp_path: Path) -> None:
    import requests

    port = free_port()
    records = tmp_path / "ui.csv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TFSBENCH_", "LOCUST_"))}
    with LoopbackServer(delay_s=0.005) as server:
        process = subprocess.Popen(
            [sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--web-host", "127.0.0.1", "--web-port", str(port),
             "--host", server.url, "--loglevel", "WARNING"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            page = ""
            for _ in range(100):  # bounded: up to ~30 s for Locust to start
                try:
                    page = requests.get(base + "/", timeout=2).text
                    break
                except requests.ConnectionError:
                    time.sleep(0.3)
            for option in ("batch_sizes", "encodings", "arrival", "rate", "records", "warmup", "cell"):
                assert f'"{option}"' in page
            form = {"user_count": "1", "spawn_rate": "1", "host": server.url, "batch_sizes": "2",
                    "encodings": "row-fast", "records": str(records), "cell": "ui"}  # fmt: skip
            assert requests.post(base + "/swarm", data=form, timeout=10).json()["success"]
            for _ in range(100):
                if records.exists() and len(read_records(records)) >= 5:
                    break
                time.sleep(0.1)
            requests.get(base + "/stop", timeout=10)
        finally:
            process.terminate()
            _, stderr = process.communicate(timeout=30)
    frame = read_records(records)
    assert len(frame) >= 5, stderr
    assert (frame["batch"] == 2).all()
    assert (frame["cell"] == "ui").all()
    assert (frame["error"] == "").all()


def test_web_ui_bad_option_stops_the_run_and_shows_why(tmp_path: Path) -> None:
    import requests

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TFSBENCH_", "LOCUST_"))}
    with LoopbackServer(delay_s=0.005) as server:
        process = subprocess.Popen(
            [sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--web-host", "127.0.0.1", "--web-port", str(port),
             "--host", server.url],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            page = ""
            for _ in range(100):  # bounded: up to ~30 s for Locust to start
                try:
                    page = requests.get(base + "/", timeout=2).text
                    break
                except requests.ConnectionError:
                    time.sleep(0.3)
            # The form's help names every valid encoding and arrival model.
            for name in (*ENCODING_NAMES, "closed", "poisson", "constant"):
                assert name in page, name
            form = {"user_count": "2", "spawn_rate": "2", "host": server.url, "encodings": "row-jsonn"}
            requests.post(base + "/swarm", data=form, timeout=10)
            stats: dict = {}
            for _ in range(100):  # bounded: up to ~10 s for the stop
                stats = requests.get(base + "/stats/requests", timeout=5).json()
                if stats["state"] == "stopped":
                    break
                time.sleep(0.1)
        finally:
            process.terminate()
            _, stderr = process.communicate(timeout=30)
    assert stats["state"] == "stopped", stderr
    assert stats["user_count"] == 0
    (failure,) = stats["errors"]  # the Failures tab: one entry that says what is wrong
    assert failure["name"] == "tfsbench options"
    assert "unknown encoding 'row-jsonn'" in failure["error"]
    assert "row-orjson" in failure["error"]  # with the valid names
    assert server.requests == 0
    assert "Traceback" not in stderr
    assert "StopUser" not in stderr


@pytest.fixture(scope="module")
def embedded_url(embedded_server) -> str:
    """The real embedded server, shared by the whole session."""
    return embedded_server.url


def test_two_encodings_and_two_batch_sizes_against_the_embedded_server(embedded_url: str, tmp_path: Path) -> None:
    result = run_locust(
        embedded_url,
        tmp_path,
        "--batch-sizes",
        "1,4",
        "--encodings",
        "row-orjson,b64-png",
        "--warmup",
        "1",
        run_time="6s",
    )
    assert result["rc"] == 0, result["stderr"][-3000:]
    names = {f"predict b={b} {e}" for b in (1, 4) for e in ("row-orjson", "b64-png")}
    assert set(result["stats"]) == names
    assert all(entry["num_failures"] == 0 for entry in result["stats"].values())
    frame = read_records(result["records"])
    assert len(frame) == locust_requests(result["stats"])
    assert (frame["status"] == 200).all()
    assert (frame["error"] == "").all()
    assert set(zip(frame["batch"], frame["encoding"], strict=True)) == {(1, "row-orjson"), (4, "row-orjson"),
                                                                          (1, "b64-png"), (4, "b64-png")}  # fmt: skip
