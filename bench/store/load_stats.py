"""The load generator's side-car (``requests.load.json`` beside ``requests.csv``): what is not per request.

Warm-up requests excluded from the records, the generator's own CPU use, event-loop lag and
whether it saturated, the sends that were due but never answered when the run stopped,
warnings, and whether the process finished its file. Written atomically (rename), so a reader
never sees half a file. One process writes one side-car; :func:`combine_load_stats` makes one
for several (the worst process's CPU and loop lag, counts added up).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from bench.errors import ResultsError
from bench.store.atomic import replace_atomically


@dataclass(frozen=True)
class LoadStats:
    """What a load-generating process knows beyond its records (the ``*.load.json`` side-car).

    ``warmup_by_cell`` counts warm-up requests (sent, never recorded) per cell label;
    ``client_cpu_pct_max`` is the highest windowed CPU use of one generator process (100 =
    one core) and ``client_cpu_pct_mean`` the busiest process's mean over the run (several
    processes: the worst one, never a mean over processes, since one saturated process is
    enough to spoil its rows); ``saturated`` is true when a process went above the saturation
    threshold, i.e. the numbers may measure the client rather than the server.
    ``loop_lag_ms_p99``/``loop_lag_ms_max``: how late the process's event loop woke a timer
    (bench.scenario.loop_lag), its worst process. ``stopping_unix_s``: when the run began to
    stop (the earliest process). ``unanswered_by_cell``: open model, per cell label, the
    intended send times (unix s, in :data:`UNANSWERED_BIN_S` bins ``[start_s, count]``) of sends
    that were due before the stop but never answered: their user was still behind, or the
    request was cut off at the stop.

    With workers (bench.scenario.relay): ``by_worker`` keeps each worker's own figures by its
    ``host:pid`` name (``client_cpu_pct_max``, ``client_cpu_pct_mean``, ``saturated``,
    ``loop_lag_ms_p99``, ``loop_lag_ms_max``, ``rows``, ``clock_offset_ms``, ``clock_rtt_ms``),
    so a verdict can name the one worker that saturated; ``lost_workers`` names the workers whose
    final batch of records never reached the master (they died: their unsent rows are lost).
    """

    processes: int = 1
    warmup_by_cell: dict[str, int] = field(default_factory=dict)
    client_cpu_pct_max: float = 0.0
    client_cpu_pct_mean: float = 0.0
    saturated: bool = False
    loop_lag_ms_p99: float = 0.0
    loop_lag_ms_max: float = 0.0
    stopping_unix_s: float = 0.0
    unanswered_by_cell: dict[str, list[list[float]]] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    finished: bool = False
    by_worker: dict[str, dict[str, float]] = field(default_factory=dict)
    lost_workers: tuple[str, ...] = ()

    @property
    def saturated_workers(self) -> tuple[str, ...]:
        """The workers whose own CPU monitor saw saturation, by name."""
        return tuple(name for name, figures in sorted(self.by_worker.items()) if figures.get("saturated"))

    @property
    def warmup_excluded(self) -> int:
        return sum(self.warmup_by_cell.values())

    def unanswered(self, cell: str | None = None) -> int:
        """Sends due before the stop and never answered (one cell, or all)."""
        cells = [cell] if cell is not None else list(self.unanswered_by_cell)
        return int(sum(count for c in cells for _, count in self.unanswered_by_cell.get(c, [])))

    def unanswered_between(self, cell: str, start_s: float, end_s: float) -> float:
        """Unanswered sends of ``cell`` intended in ``[start_s, end_s)`` (unix s); partial bins pro rata."""
        total = 0.0
        for bin_start, count in self.unanswered_by_cell.get(cell, []):
            overlap = min(end_s, bin_start + UNANSWERED_BIN_S) - max(start_s, bin_start)
            if overlap > 0:
                total += count * min(1.0, overlap / UNANSWERED_BIN_S)
        return total

    def to_json(self) -> str:
        data = asdict(self)
        data["warnings"] = list(self.warnings)
        data["lost_workers"] = list(self.lost_workers)
        return json.dumps(data, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LoadStats:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data["warnings"] = tuple(data.get("warnings", ()))
        data["lost_workers"] = tuple(str(w) for w in data.get("lost_workers", ()))
        data["by_worker"] = {
            str(k): {str(f): float(v) for f, v in figures.items()} for k, figures in data.get("by_worker", {}).items()
        }
        data["warmup_by_cell"] = {str(k): int(v) for k, v in data.get("warmup_by_cell", {}).items()}
        data["unanswered_by_cell"] = {
            str(k): [[float(b), float(c)] for b, c in v] for k, v in data.get("unanswered_by_cell", {}).items()
        }
        return cls(**data)


# Unanswered sends are kept per 100 ms of intended send time: a probe that fell far behind has
# tens of thousands, and its window is seconds long.
UNANSWERED_BIN_S = 0.1


def time_bins(times_s: Sequence[float] | np.ndarray) -> list[list[float]]:
    """``[[bin_start_s, count], ...]`` of ``times_s`` in :data:`UNANSWERED_BIN_S` bins, sorted."""
    keys = np.floor(np.asarray(times_s, dtype=float) / UNANSWERED_BIN_S).astype(np.int64)
    starts, counts = np.unique(keys, return_counts=True)
    return [[round(int(k) * UNANSWERED_BIN_S, 3), float(n)] for k, n in zip(starts, counts, strict=True)]


def _add_bins(parts: Iterable[list[list[float]]]) -> list[list[float]]:
    counts: dict[float, float] = {}
    for bins in parts:
        for start, count in bins:
            counts[start] = counts.get(start, 0.0) + count
    return [[k, counts[k]] for k in sorted(counts)]


def load_stats_path(records_path: Path | str) -> Path:
    """``requests.csv`` -> ``requests.load.json`` (the side-car next to a records file)."""
    path = Path(records_path)
    return path.with_name(f"{path.stem}.load.json")


def write_load_stats(records_path: Path | str, stats: LoadStats) -> Path:
    """Write the side-car atomically (rename), so a reader never sees half a file."""
    target = load_stats_path(records_path)
    replace_atomically(target, lambda tmp: tmp.write_text(stats.to_json(), encoding="utf-8"))
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
    """One LoadStats for several processes: counts add up, CPU and loop lag keep the worst process.

    A mean over processes would hide one saturated process behind an idle one (two processes
    at 100 % and 0 % are not "50 %": half the rows measured the client).
    """
    items = list(parts)
    if not items:
        return LoadStats(processes=0)
    warmup: dict[str, int] = {}
    for item in items:
        for cell, count in item.warmup_by_cell.items():
            warmup[cell] = warmup.get(cell, 0) + count
    cells = {c for i in items for c in i.unanswered_by_cell}
    stops = [i.stopping_unix_s for i in items if i.stopping_unix_s > 0]
    return LoadStats(
        processes=sum(i.processes for i in items),
        warmup_by_cell=warmup,
        client_cpu_pct_max=max(i.client_cpu_pct_max for i in items),
        client_cpu_pct_mean=max(i.client_cpu_pct_mean for i in items),
        saturated=any(i.saturated for i in items),
        loop_lag_ms_p99=max(i.loop_lag_ms_p99 for i in items),
        loop_lag_ms_max=max(i.loop_lag_ms_max for i in items),
        stopping_unix_s=min(stops) if stops else 0.0,
        unanswered_by_cell={c: _add_bins(i.unanswered_by_cell.get(c, []) for i in items) for c in sorted(cells)},
        warnings=tuple(w for i in items for w in i.warnings),
        finished=all(i.finished for i in items),
        by_worker={k: v for i in items for k, v in i.by_worker.items()},
        lost_workers=tuple(w for i in items for w in i.lost_workers),
    )
