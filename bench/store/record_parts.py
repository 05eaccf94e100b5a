"""Per-process records files of a Locust run with workers, and merging them into one.

A worker process writes ``--records PATH`` with its process id inserted
(``requests.4711.csv``) and marks it finished in its load side-car when it closes. The master
(or ``python -m bench.store.record_parts merge PATH``) merges the finished parts into ``PATH``, rows and
side-cars, and removes them; a part never marked finished is left where it is.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.errors import BenchError
from bench.store.load_stats import combine_load_stats, load_stats_path, read_load_stats, write_load_stats
from bench.store.records import merge_records

log = logging.getLogger("tfsbench.load")


def records_path_for(path: Path, distributed: bool, pid: int | None = None) -> Path:
    """``requests.csv`` as is for a single process; ``requests.<pid>.csv`` for a worker process."""
    if not distributed:
        return path
    return path.with_name(f"{path.stem}.{os.getpid() if pid is None else pid}{path.suffix}")


def cell_record_files(cell_dir: Path) -> list[Path]:
    """Records files one cell's Locust run wrote (``records*.csv``: one per worker process)."""
    return sorted(p for p in cell_dir.glob("records*.csv") if p.is_file())


def part_files(path: Path) -> list[Path]:
    """Worker files that belong to ``path`` (``requests.<pid>.csv``)."""
    pattern = re.compile(rf"^{re.escape(path.stem)}\.\d+{re.escape(path.suffix)}$")
    if not path.parent.is_dir():
        return []
    return sorted(p for p in path.parent.iterdir() if pattern.match(p.name))


def merge_parts(
    path: Path,
    since_s: float = 0.0,
    wait_s: float = 0.0,
    sleep: Callable[[float], None] = time.sleep,
    force: bool = False,
) -> int:
    """Merge finished worker files of ``path`` into it (rows and load side-cars); returns rows merged.

    Waits up to ``wait_s`` for every part newer than ``since_s`` to be marked finished. Parts
    that never finish are left in place (with a warning), never deleted half-read; ``force``
    merges them too (for the files of a worker that was killed).
    """
    deadline = time.monotonic() + wait_s
    while True:
        parts = [p for p in part_files(path) if p.stat().st_mtime >= since_s]
        stats = {p: read_load_stats(p) for p in parts}
        unfinished = [] if force else [p for p, s in stats.items() if s is None or not s.finished]
        if not unfinished or time.monotonic() >= deadline:
            break
        sleep(0.2)
    finished = [p for p in parts if p not in unfinished]
    for p in unfinished:
        log.warning(
            "records %s not marked finished; left unmerged (merge later: python -m bench.store.record_parts merge %s)",
            p,
            path,
        )
    if not finished:
        return 0
    rows = merge_records(finished, path)
    previous = read_load_stats(path)
    combined = combine_load_stats([s for p in finished if (s := stats[p]) is not None])
    if previous is not None:
        combined = combine_load_stats([previous, combined])
    write_load_stats(path, combined)
    for p in finished:
        p.unlink(missing_ok=True)
        load_stats_path(p).unlink(missing_ok=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.store.record_parts",
        description="Merge worker records files (PATH with a process id inserted) into PATH.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    merge = sub.add_parser("merge", help="merge requests.<pid>.csv files into requests.csv")
    merge.add_argument("path", type=Path, metavar="PATH", help="the --records path, e.g. runs/x/requests.csv")
    merge.add_argument("--force", action="store_true", help="also merge files not marked finished (killed workers)")
    args = parser.parse_args(argv)
    try:
        rows = merge_parts(args.path, force=args.force)
    except BenchError as exc:
        sys.stderr.write(f"tfsbench: {exc}\n")
        return exc.exit_code
    print(f"{args.path}: merged {rows} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
