"""Benchmark of reports on big runs: rows, seconds and peak RSS of ``tfsbench report`` at 2 M and 20 M rows.

``python -m bench.perf.records_scale [--rows 2000000,20000000] [--cells 8] [--dir DIR] [--keep]``
writes one synthetic run per row count (open model: Poisson-like latencies, 1 % errors, late
sends of both causes; the columns and formats of bench.store.records), then runs
``python -m bench report RUN`` in a child process and prints its wall time and peak RSS (the
child's own ``ru_maxrss`` from ``wait4``, so nothing of this process counts). At 10,000 req/s an
hour is 36 M rows; the report must stay under 2 GB at 20 M (exit 1 when it does not).

The generator builds each chunk of :data:`GEN_CHUNK_ROWS` rows as a numpy byte matrix, so 20 M
rows take about a minute and bounded memory. ``--report-only DIR`` measures the runs already
under DIR (kept by ``--keep``), e.g. to measure another checkout's report on the same files.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.store import runs
from bench.store.records import COLUMNS

GEN_CHUNK_ROWS = 1_000_000
RSS_LIMIT_BYTES = 2 << 30
ENCODINGS = ("row-orjson", "b64-png")
RATE_PER_S = 10_000.0
# The columns the generator writes; later optional ones (protocol, ...) read with their defaults.
WRITTEN_COLUMNS = (*COLUMNS, "send_lag_ms", "lag_cause")


def write_synthetic_run(out: Path, rows: int, cells: int = 8, seed: int = 0) -> Path:
    """A run dir whose requests.csv has ``rows`` rows over ``cells`` cells, as a sweep leaves it."""
    rng = np.random.default_rng(seed)
    run_dir = runs.new_run_dir(out)
    grid = [(2**i, ENCODINGS[i % len(ENCODINGS)]) for i in range(cells)]
    per_cell = [rows // cells + (1 if i < rows % cells else 0) for i in range(cells)]
    t_us = 1_700_000_000 * 1_000_000
    with (run_dir / runs.REQUESTS_FILE).open("wb") as f:
        f.write((",".join(WRITTEN_COLUMNS) + "\n").encode())
        for (batch, encoding), count in zip(grid, per_cell, strict=True):
            cell = runs.cell_name(batch, encoding)
            for start in range(0, count, GEN_CHUNK_ROWS):
                n = min(GEN_CHUNK_ROWS, count - start)
                starts = t_us + np.cumsum(rng.integers(1, int(2e6 / RATE_PER_S), n))
                t_us = int(starts[-1])
                f.write(_chunk_bytes(rng, starts, batch, encoding, cell))
    cell_meta = [
        {"cell": runs.cell_name(b, e), "batch": b, "encoding": e, "status": "done", "merged": True} for b, e in grid
    ]
    runs.update_meta(
        run_dir,
        command="sweep",
        config={"arrival": "poisson", "rate_per_s": RATE_PER_S, "load": f"poisson {RATE_PER_S:g}/s"},
        target={"host": "http://127.0.0.1:1", "server_kind": "tensorflow-serving", "model_name": "m"},
        cells=cell_meta,
        incomplete=False,
        incomplete_reason=None,
    )
    return run_dir


# Rows are built as a byte matrix (one fixed-width field after another, padding bytes dropped at
# the end): formatting 20 M rows through pandas or Python strings takes minutes, this takes seconds.
_PAD = 0


def _chunk_bytes(rng: np.random.Generator, t_start_us: np.ndarray, batch: int, encoding: str, cell: str) -> bytes:
    """CSV text of one chunk of rows in WRITTEN_COLUMNS order (open model, 1 % errors, 3 % late sends)."""
    n = t_start_us.size
    failed = (rng.random(n) < 0.01).astype(np.int64)
    lag_us = np.where(rng.random(n) < 0.03, np.round(rng.exponential(20_000.0, n)), 0).astype(np.int64)
    cause = np.where(rng.random(n) < 0.5, 0, 1)
    latency_us = np.round((2000.0 + 300.0 * batch) * rng.lognormal(0.0, 0.4, n)).astype(np.int64) + lag_us
    encode = np.maximum(np.round(rng.normal(9000.0 * batch, 500.0, n)), 0).astype(np.int64)
    fields = [
        _number(t_start_us, 10, 6),
        _number(latency_us, 6, 3),
        _choice(failed, ("200", "503")),
        _choice(np.zeros(n, dtype=np.int64), (f"{batch},{encoding}",)),
        _number(batch * 150_000 + rng.integers(0, 100, n), 10),
        _number(encode, 7, 1),
        _choice(np.zeros(n, dtype=np.int64), (str(120 * batch),)),
        _choice(failed, ("", "HTTP 503: overloaded")),
        _choice(np.zeros(n, dtype=np.int64), (cell,)),
        _number(lag_us, 5, 3),
        _choice(cause, ("busy", "idle")),
    ]
    comma = np.full((n, 1), ord(","), dtype=np.uint8)
    blocks: list[np.ndarray] = []
    for block in fields:
        blocks += [block, comma]
    blocks[-1] = np.full((n, 1), ord("\n"), dtype=np.uint8)
    text = np.hstack(blocks).ravel()
    return bytes(text[text != _PAD].tobytes())


def _number(values: np.ndarray, int_digits: int, decimals: int = 0) -> np.ndarray:
    """Decimal text of non-negative ints scaled by 10**decimals, one row each, leading zeros as padding."""
    rest = np.asarray(values, dtype=np.int64).copy()
    total = int_digits + decimals
    digits = np.empty((rest.size, total), dtype=np.uint8)
    for k in range(total - 1, -1, -1):
        digits[:, k] = rest % 10 + ord("0")
        rest //= 10
    head = digits[:, : int_digits - 1]
    head[np.logical_and.accumulate(head == ord("0"), axis=1)] = _PAD
    if not decimals:
        return digits
    dot = np.full((rest.size, 1), ord("."), dtype=np.uint8)
    return np.hstack([digits[:, :int_digits], dot, digits[:, int_digits:]])


def _choice(index: np.ndarray, options: tuple[str, ...]) -> np.ndarray:
    """Row i is ``options[index[i]]`` as bytes, padded to the longest option."""
    table = np.zeros((len(options), max(1, *(len(o) for o in options))), dtype=np.uint8)
    for i, option in enumerate(options):
        table[i, : len(option)] = np.frombuffer(option.encode(), dtype=np.uint8)
    chosen: np.ndarray = table[index]
    return chosen


def measure_report(run_dir: Path) -> tuple[float, int, int]:
    """(wall seconds, peak RSS bytes, exit status) of ``python -m bench report run_dir`` in a child."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "report", str(run_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    # wait4 gives this child's own peak RSS (RUSAGE_CHILDREN would be the max over every child).
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.stderr is not None:
        err = proc.stderr.read().decode("utf-8", "replace").strip()
        if proc.returncode:
            print(f"  report failed ({proc.returncode}): {err[-400:]}", file=sys.stderr)
    return seconds, int(usage.ru_maxrss) * 1024, proc.returncode


def _report_only(base: Path) -> int:
    over = False
    print(f"{'rows':>12} {'csv MB':>8} {'report s':>9} {'peak RSS MB':>12}")
    for latest in sorted(base.glob("rows-*/latest"), key=lambda p: int(p.parent.name.split("-")[1])):
        run_dir = latest.resolve()
        rows = int(latest.parent.name.split("-")[1])
        seconds, rss, rc = measure_report(run_dir)
        over |= rc != 0 or rss > RSS_LIMIT_BYTES
        size_mb = (run_dir / runs.REQUESTS_FILE).stat().st_size / 1e6
        print(f"{rows:>12,} {size_mb:>8.0f} {seconds:>9.1f} {rss / 2**20:>12.0f}", flush=True)
    return 1 if over else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf.records_scale", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="2000000,20000000", help="row counts, comma-separated")
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the runs (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the generated runs")
    parser.add_argument("--report-only", action="store_true", help="measure the runs kept under --dir, make none")
    args = parser.parse_args(argv)
    if args.report_only:
        if args.dir is None:
            parser.error("--report-only needs --dir")
        return _report_only(args.dir)
    try:
        counts = [int(float(r)) for r in args.rows.split(",") if r.strip()]
    except ValueError:
        parser.error(f"--rows: not a list of row counts: {args.rows!r}")
    base = args.dir or Path(tempfile.mkdtemp(prefix="tfsbench-scale-"))
    over = False
    print(f"{'rows':>12} {'csv MB':>8} {'gen s':>7} {'report s':>9} {'peak RSS MB':>12}")
    try:
        for rows in counts:
            started = time.perf_counter()
            run_dir = write_synthetic_run(base / f"rows-{rows}", rows, args.cells)
            gen_s = time.perf_counter() - started
            size_mb = (run_dir / runs.REQUESTS_FILE).stat().st_size / 1e6
            seconds, rss, rc = measure_report(run_dir)
            over |= rc != 0 or rss > RSS_LIMIT_BYTES
            print(f"{rows:>12,} {size_mb:>8.0f} {gen_s:>7.1f} {seconds:>9.1f} {rss / 2**20:>12.0f}", flush=True)
            if not args.keep:
                shutil.rmtree(run_dir.parent, ignore_errors=True)
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(base, ignore_errors=True)
    if over:
        print(f"FAIL: a report failed or went over {RSS_LIMIT_BYTES / 2**30:.0f} GB of RSS", file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
