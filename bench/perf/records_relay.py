"""What records over Locust's messages cost one worker: its requests/s with and without ``--records``.

    python -m bench.perf.records_relay [--duration 6] [--users 8] [--rounds 3]

Starts the trivial predict endpoint of bench.perf.load_generator (answers at once, never parses
a body) on 127.0.0.1, then runs ``locust -f locustfiles/predict.py --processes 1`` (a master and
one forked worker: the worker sends its rows to the master, bench.scenario.relay) at batch 1,
closed model, in rounds of three side by side: no records; records with
``--records-batch-rows 1`` (every row its own message, the worst case); records in the default
batches (each round starting with another mode). Requests/s is Locust's own count over its
first-to-last request span; each mode's median over the rounds is compared with the no-records
median. The endpoint is trivial on
purpose: the worker is the bottleneck, so whatever the records cost shows in full.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import SOURCE_ROOT, argtypes
from bench.perf.load_generator import _serve
from bench.ports import free_port
from bench.store.load_stats import load_stats_path, read_load_stats
from bench.store.records import read_records

MODES: tuple[tuple[str, list[str]], ...] = (
    ("no records", []),
    ("records, 1 row/message", ["--records-batch-rows", "1"]),
    ("records, batched", []),
)
REQUIRED_RATIO = 0.9


def run_once(host: str, mode: int, users: int, duration_s: int, tmp: Path) -> tuple[float, int, int]:
    """(requests/s, Locust's requests, rows in the master's file) of one run."""
    name, extra = MODES[mode]
    tag = f"m{mode}"
    records = tmp / f"{tag}.csv"
    port = str(free_port())
    command = [
        sys.executable, "-m", "locust", "-f", "locustfiles/predict.py", "--headless", "--host", host,
        "-u", str(users), "-r", str(users), "-t", f"{duration_s}s", "--loglevel", "WARNING",
        "--json-file", str(tmp / tag), "--batch-sizes", "1", "--encodings", "row-fast", "--pool-size", "8",
        "--cpu-warn-pct", "101", "--processes", "1", "--master-port", port, "--master-bind-port", port,
        "--master-bind-host", "127.0.0.1", *extra,
    ]  # fmt: skip
    if name != "no records":
        command += ["--records", str(records)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TFSBENCH_", "LOCUST_"))}
    subprocess.run(command, cwd=SOURCE_ROOT, env=env, check=True, capture_output=True, timeout=duration_s + 120)
    stats = [s for s in json.loads((tmp / f"{tag}.json").read_text()) if s["name"].startswith("predict")]
    requests = sum(s["num_requests"] for s in stats)
    span = max(s["last_request_timestamp"] for s in stats) - min(s["start_time"] for s in stats) if stats else 0.0
    rows = len(read_records(records)) if records.exists() else 0
    load = read_load_stats(records) if records.exists() else None
    if load is not None and load.lost_workers:
        print(f"  the master marked the run incomplete: {'; '.join(load.warnings)}")
    records.unlink(missing_ok=True)
    load_stats_path(records).unlink(missing_ok=True)
    return (requests / span if span > 0 else 0.0), requests, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf.records_relay", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=argtypes.positive_int, default=6, metavar="S", help="seconds per run")
    parser.add_argument("--users", type=argtypes.positive_int, default=8, metavar="N", help="Locust users")
    parser.add_argument("--rounds", type=argtypes.positive_int, default=3, metavar="N", help="runs per mode")
    args = parser.parse_args(argv)

    ports: multiprocessing.Queue[int] = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(ports, 1), daemon=True)
    server.start()
    rps: dict[int, list[float]] = {i: [] for i in range(len(MODES))}
    try:
        host = f"http://127.0.0.1:{ports.get(timeout=30)}"
        print(f"one worker process (--processes 1), {args.users} users, batch 1, {args.duration} s per run, "
              f"{args.rounds} rounds, trivial endpoint {host}, {os.cpu_count()} CPUs")  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            for round_no in range(args.rounds):
                # Each round starts with another mode: the first run after a pause meets a calmer machine.
                for step in range(len(MODES)):
                    mode = (step + round_no) % len(MODES)
                    value, requests, rows = run_once(host, mode, args.users, args.duration, Path(tmp))
                    rps[mode].append(value)
                    kept = f", {rows} rows" + ("" if rows == requests else " (MISMATCH)") if mode else ""
                    print(f"round {round_no + 1} {MODES[mode][0]:<24} {value:>8.0f} req/s ({requests} requests{kept})")
    finally:
        server.terminate()
        server.join(timeout=5)
    base = statistics.median(rps[0])
    worst = 1.0
    for mode in range(len(MODES)):
        median = statistics.median(rps[mode])
        ratio = median / base if base else 0.0
        worst = min(worst, ratio) if mode else worst
        print(f"{MODES[mode][0]:<24} median {median:>8.0f} req/s  ratio {ratio:.3f}")
    verdict = "ok" if worst >= REQUIRED_RATIO else f"BELOW {REQUIRED_RATIO}"
    print(f"records over messages / no records, worst mode: {worst:.3f}x ({verdict})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
