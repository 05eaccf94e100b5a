"""Is a cell's measurement stable? perf_analyzer's rule over consecutive measurement windows.

With ``--stability PCT`` a cell keeps measuring in windows of ``--stability-window`` seconds
(by request completion time) until the last :data:`STABILITY_WINDOWS` windows agree: their
throughputs and their p99 latencies are each within PCT of one another (max / min <= 1 + PCT/100,
as perf_analyzer's ``--stability-percentage`` over its last three measurements), or until the
cell's time cap. A server still warming up, a backlog that grows, a stall, a neighbour's
noise: each keeps the windows apart, and the summary then says the cell was not stable.

Usage (``bench.commands.cells.run_cell`` does this while Locust runs)::

    tail = RecordTail()
    frame = tail.read([records])                  # every complete row so far
    windows = measure_windows(frame, origin_s=t0, window_s=5.0, now_s=time.time())
    is_stable(windows, pct=10.0)
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

STABILITY_WINDOWS = 3
# A window counts once the clock is this far past its end: rows are written as requests
# complete, so by then every request that completed inside it is on disk.
WINDOW_GRACE_S = 0.25
_WANTED = ("t_start", "latency_ms", "status", "error")


@dataclass(frozen=True)
class Window:
    """One measurement window: completions in ``[start_s, start_s + window_s)``."""

    start_s: float
    requests: int
    throughput_rps: float
    p99_ms: float  # successful requests only; NaN when none succeeded


class RecordTail:
    """Reads growing records files incrementally (complete lines only), for decisions while a cell runs.

    Rows are kept as numpy columns (about 28 bytes a row, not a Python tuple each), since a cell
    measured until stable can run for hours at thousands of requests/s.
    """

    def __init__(self) -> None:
        self._offsets: dict[Path, int] = {}
        self._columns: dict[Path, list[str]] = {}
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def read(self, paths: Iterable[Path]) -> pd.DataFrame:
        """Every complete row read so far from ``paths`` (t_start, latency_ms, status, error)."""
        for path in paths:
            self._read_new(path)
        if len(self._parts) > 1:
            starts, latencies, statuses, errors = (np.concatenate(col) for col in zip(*self._parts, strict=True))
            self._parts = [(starts, latencies, statuses, errors)]
        if not self._parts:
            return pd.DataFrame({name: [] for name in _WANTED})
        return pd.DataFrame(dict(zip(_WANTED, self._parts[0], strict=True)))

    def _read_new(self, path: Path) -> None:
        offset = self._offsets.get(path, 0)
        try:
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1  # a last line still being written waits for the next read
        if end == 0:
            return
        self._offsets[path] = offset + end
        lines = list(csv.reader(io.StringIO(data[:end].decode("utf-8", "replace"))))
        if path not in self._columns and lines:
            self._columns[path] = lines.pop(0)
        index = {name: i for i, name in enumerate(self._columns.get(path, []))}
        if not all(name in index for name in _WANTED):
            return
        rows: list[tuple[float, float, int, str]] = []
        for line in lines:
            try:
                rows.append(
                    (
                        float(line[index["t_start"]]),
                        float(line[index["latency_ms"]]),
                        int(line[index["status"]]),
                        line[index["error"]],
                    )
                )
            except (IndexError, ValueError):
                continue
        if rows:
            starts, latencies, statuses, errors = zip(*rows, strict=True)
            self._parts.append(
                (
                    np.array(starts, dtype=float),
                    np.array(latencies, dtype=float),
                    np.array(statuses, dtype=np.int32),
                    np.array(errors, dtype=object),
                )
            )


def measure_windows(frame: pd.DataFrame, origin_s: float, window_s: float, now_s: float) -> list[Window]:
    """The complete windows of ``window_s`` seconds from ``origin_s`` (unix s), by completion time."""
    if frame.empty or window_s <= 0:
        return []
    ends = frame["t_start"].to_numpy(dtype=float) + frame["latency_ms"].to_numpy(dtype=float) / 1000.0
    ok = ((frame["status"] == 200) & (frame["error"].fillna("").astype(str) == "")).to_numpy()
    # Sorted by completion once, each window is a slice: hours of rows cost a sort, not a scan per window.
    order = np.argsort(ends, kind="stable")
    ends, ok = ends[order], ok[order]
    latency = frame["latency_ms"].to_numpy(dtype=float)[order]
    count = int((now_s - WINDOW_GRACE_S - origin_s) // window_s)
    windows = []
    for k in range(max(count, 0)):
        start = origin_s + k * window_s
        lo, hi = np.searchsorted(ends, [start, start + window_s], side="left")
        latencies = latency[lo:hi][ok[lo:hi]]
        windows.append(
            Window(
                start_s=start,
                requests=int(hi - lo),
                throughput_rps=float(hi - lo) / window_s,
                p99_ms=float(np.percentile(latencies, 99)) if latencies.size else float("nan"),
            )
        )
    return windows


def is_stable(windows: list[Window], pct: float, count: int = STABILITY_WINDOWS) -> bool:
    """The last ``count`` windows agree within ``pct`` percent on throughput and on p99."""
    if len(windows) < count:
        return False
    last = windows[-count:]
    limit = 1.0 + pct / 100.0
    for values in ([w.throughput_rps for w in last], [w.p99_ms for w in last]):
        if any(not v > 0 for v in values):  # an empty window, or no success in one: not stable
            return False
        if max(values) / min(values) > limit:
            return False
    return True
