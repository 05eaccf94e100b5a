"""The load generator's side-car (``requests.load.json`` beside ``requests.csv``): what is not per request.

Warm-up requests excluded from the records, the generator's own CPU use and whether it
saturated, warnings, and whether the process finished its file. Written atomically (rename), so
a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from bench.errors import ResultsError


@dataclass(frozen=True)
class LoadStats:
    """What a load-generating process knows beyond its records (the ``*.load.json`` side-car).

    ``warmup_by_cell`` counts warm-up requests (sent, never recorded) per cell label;
    ``client_cpu_pct_max`` is the highest windowed CPU use of one generator process (100 =
    one core); ``saturated`` is true when that went above the saturation threshold, i.e. the
    numbers may measure the client rather than the server.
    """

    processes: int = 1
    warmup_by_cell: dict[str, int] = field(default_factory=dict)
    client_cpu_pct_max: float = 0.0
    client_cpu_pct_mean: float = 0.0
    saturated: bool = False
    warnings: tuple[str, ...] = ()
    finished: bool = False

    @property
    def warmup_excluded(self) -> int:
        return sum(self.warmup_by_cell.values())

    def to_json(self) -> str:
        data = asdict(self)
        data["warnings"] = list(self.warnings)
        return json.dumps(data, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LoadStats:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data["warnings"] = tuple(data.get("warnings", ()))
        data["warmup_by_cell"] = {str(k): int(v) for k, v in data.get("warmup_by_cell", {}).items()}
        return cls(**data)


def load_stats_path(records_path: Path | str) -> Path:
    """``requests.csv`` -> ``requests.load.json`` (the side-car next to a records file)."""
    path = Path(records_path)
    return path.with_name(f"{path.stem}.load.json")


def write_load_stats(records_path: Path | str, stats: LoadStats) -> Path:
    """Write the side-car atomically (rename), so a reader never sees half a file."""
    target = load_stats_path(records_path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(stats.to_json(), encoding="utf-8")
        tmp.replace(target)
    except OSError as exc:
        raise ResultsError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return target


def read_load_stats(records_path: Path | str) -> LoadStats | None:
    """The side-car for a records file, or None when there is none."""
    target = load_stats_path(records_path)
    try:
        return LoadStats.from_json(target.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise ResultsError(f"cannot read {target}: {exc}") from exc


def combine_load_stats(parts: Iterable[LoadStats]) -> LoadStats:
    """One LoadStats for several processes: counts add up, CPU keeps the worst process."""
    items = list(parts)
    if not items:
        return LoadStats(processes=0)
    warmup: dict[str, int] = {}
    for item in items:
        for cell, count in item.warmup_by_cell.items():
            warmup[cell] = warmup.get(cell, 0) + count
    return LoadStats(
        processes=sum(i.processes for i in items),
        warmup_by_cell=warmup,
        client_cpu_pct_max=max(i.client_cpu_pct_max for i in items),
        client_cpu_pct_mean=float(np.mean([i.client_cpu_pct_mean for i in items])),
        saturated=any(i.saturated for i in items),
        warnings=tuple(w for i in items for w in i.warnings),
        finished=all(i.finished for i in items),
    )
