"""Per-process records files of a Locust run with workers, and merging them into one.

A worker process writes ``--records PATH`` with its process id inserted
(``requests.4711.csv``) and marks it finished in its load side-car when it closes. The master
(or ``python -m bench.scenario.events merge PATH``) merges the finished parts into ``PATH``, rows and
side-cars, and removes them; a part never marked finished is left where it is.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from bench.store.records import combine_load_stats, load_stats_path, merge_records, read_load_stats, write_load_stats

log = logging.getLogger("tfsbench.load")


def records_path_for(path: Path, distributed: bool, pid: int | None = None) -> Path:
    """``requests.csv`` as is for a single process; ``requests.<pid>.csv`` for a worker process."""
    if not distributed:
        return path
    return path.with_name(f"{path.stem}.{os.getpid() if pid is None else pid}{path.suffix}")


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
            "records %s not marked finished; left unmerged (merge later: python -m bench.scenario.events merge %s)",
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
