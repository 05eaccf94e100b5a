"""What ``tfsbench tune`` searches: batching configurations, how the search moves, the front it draws.

A configuration is server batching off (the baseline, always measured) or one set of
tensorflow/serving ``BatchingParameters``. The space is given per parameter
(``max_batch_size=8,32,128;batch_timeout_micros=0,2000,10000;num_batch_threads=1,2``); the
search does not walk the whole grid. It follows tensorflow/serving's batching guide ("CPU-only:
One Approach"): start with ``num_batch_threads`` at the number of CPU cores, ``max_batch_size``
high and ``batch_timeout_micros`` at 0, with ``max_enqueued_batches`` really high while
experimenting; then move along one parameter at a time (the timeout first, as the guide says)
for as long as the throughput within the SLO improves, and stop when no single step does.

A configuration never expanded further is one that a step away from the current best did not
improve on; one dominated on both throughput and latency by a measured configuration is never
expanded (:func:`dominated`). The search is a pure function of the measurements it is given,
so an interrupted tune resumes by replaying what it measured (:func:`search`).

Each configuration is one point: the best client cell it served within the SLO (images/s and
the latency percentile at that rate). The front (:func:`pareto_front`) is the set of points no
other point beats on both; the recommendation is the front's highest throughput within the SLO.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bench.errors import ConfigError

# The parameters a space may name, in the order the search moves along them, and how a key spells them.
PARAMETERS: tuple[str, ...] = ("batch_timeout_micros", "max_batch_size", "num_batch_threads", "max_enqueued_batches")
_SHORT = {
    "batch_timeout_micros": "btm",
    "max_batch_size": "mbs",
    "num_batch_threads": "nbt",
    "max_enqueued_batches": "meb",
}
# "Temporarily set max_enqueued_batches to a really high value" while experimenting (the guide).
EXPERIMENT_MAX_ENQUEUED_BATCHES = 1_000_000
Space = dict[str, tuple[int, ...]]


@dataclass(frozen=True, order=True)
class BatchingConfig:
    """Batching off (``enabled`` False, the baseline) or one BatchingParameters setting."""

    enabled: bool = True
    max_batch_size: int = 0
    batch_timeout_micros: int = 0
    num_batch_threads: int = 0
    max_enqueued_batches: int = EXPERIMENT_MAX_ENQUEUED_BATCHES

    @property
    def key(self) -> str:
        """``off`` or ``mbs32-btm2000-nbt2`` (``-meb4`` when not the experiment's default): a directory name."""
        if not self.enabled:
            return "off"
        parts = [
            f"{_SHORT[p]}{getattr(self, p)}" for p in ("max_batch_size", "batch_timeout_micros", "num_batch_threads")
        ]
        if self.max_enqueued_batches != EXPERIMENT_MAX_ENQUEUED_BATCHES:
            parts.append(f"meb{self.max_enqueued_batches}")
        return "-".join(parts)

    def parameters_text(self) -> str:
        """The text-format BatchingParameters file tensorflow_model_server reads (``--batching_parameters_file``)."""
        if not self.enabled:
            raise ValueError("batching off has no parameters file")
        return "".join(f"{p} {{ value: {getattr(self, p)} }}\n" for p in PARAMETERS)

    def as_dict(self) -> dict[str, int | bool | None]:
        if not self.enabled:
            return {"batching": False, **dict.fromkeys(PARAMETERS)}
        return {"batching": True, **{p: getattr(self, p) for p in PARAMETERS}}


OFF = BatchingConfig(enabled=False)


def parse_space(text: str) -> Space:
    """``name=v1,v2;name=v3`` -> {name: sorted values}; ConfigError (one line) for anything else."""
    space: Space = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        name, sep, values = part.partition("=")
        name = name.strip()
        if not sep or name not in PARAMETERS:
            raise ConfigError(f"--space: '{part}' is not NAME=V1,V2 with NAME one of {', '.join(PARAMETERS)}")
        if name in space:
            raise ConfigError(f"--space names {name} twice")
        try:
            numbers = sorted({int(v) for v in values.split(",") if v.strip()})
        except ValueError:
            raise ConfigError(f"--space: {name} needs integers, got '{values.strip()}'") from None
        low = 0 if name == "batch_timeout_micros" else 1
        if not numbers or numbers[0] < low:
            raise ConfigError(f"--space: {name} needs values >= {low}, got '{values.strip()}'")
        space[name] = tuple(numbers)
    for required in ("max_batch_size",):
        if required not in space:
            raise ConfigError(f"--space must give {required} (e.g. 'max_batch_size=8,32,128')")
    return space


def grid_size(space: Space) -> int:
    """Configurations in the full grid, batching off included."""
    size = 1
    for values in space.values():
        size *= len(values)
    return size + 1


def _closest(values: Sequence[int], wanted: int) -> int:
    return min(values, key=lambda v: (abs(v - wanted), v))


def starting_point(space: Space, cpu_count: int) -> BatchingConfig:
    """The guide's CPU-only start: threads = cores, the highest max_batch_size, the lowest timeout."""
    return BatchingConfig(
        max_batch_size=max(space["max_batch_size"]),
        batch_timeout_micros=min(space.get("batch_timeout_micros", (0,))),
        num_batch_threads=_closest(space.get("num_batch_threads", (cpu_count,)), cpu_count),
        max_enqueued_batches=max(space.get("max_enqueued_batches", (EXPERIMENT_MAX_ENQUEUED_BATCHES,))),
    )


@dataclass(frozen=True)
class Point:
    """One configuration's measurement: its best images/s within the SLO and the latency percentile there."""

    config: BatchingConfig
    images_per_s: float
    latency_ms: float
    met_slo: bool

    def beats(self, other: Point) -> bool:
        """At least as good on both throughput and latency, and better on one."""
        at_least = self.images_per_s >= other.images_per_s and self.latency_ms <= other.latency_ms
        return at_least and (self.images_per_s > other.images_per_s or self.latency_ms < other.latency_ms)


def pareto_front(points: Iterable[Point]) -> list[Point]:
    """Points that no other point beats on both throughput and latency, by throughput (highest first)."""
    candidates = [p for p in points if p.met_slo]
    front = [p for p in candidates if not any(q.beats(p) for q in candidates)]
    return sorted(front, key=lambda p: (-p.images_per_s, p.latency_ms, p.config))


def recommend(points: Iterable[Point]) -> Point | None:
    """The front's highest throughput within the SLO (lower latency breaks a tie); None if none met it."""
    front = pareto_front(points)
    return front[0] if front else None


def dominated(point: Point, measured: Iterable[Point]) -> bool:
    return any(other.beats(point) for other in measured if other.config != point.config)


def _score(point: Point) -> tuple[float, float]:
    # A configuration that met the SLO at some rate beats one that never did; then images/s, then latency.
    return (point.images_per_s if point.met_slo else -1.0, -point.latency_ms)


def _neighbour(config: BatchingConfig, space: Space, name: str, direction: int) -> BatchingConfig | None:
    values = space.get(name)
    if not values:
        return None
    index = values.index(getattr(config, name)) + direction
    if not 0 <= index < len(values):
        return None
    changed: dict[str, Any] = {name: values[index]}
    return replace(config, **changed)


class SearchStopped(Exception):
    """``measure`` declined a configuration (the budget or ``--max-configs`` ran out)."""


def search(space: Space, cpu_count: int, measure: Callable[[BatchingConfig], Point | None]) -> list[Point]:
    """Batching off, the guide's start, then one parameter at a time while the score improves.

    ``measure`` returns a configuration's point (from a server run, or replayed from a resumed
    run), or None when the budget is spent, which ends the search with what it has. Every point
    measured is returned, in the order measured.
    """
    points: dict[BatchingConfig, Point] = {}

    def point(config: BatchingConfig) -> Point:
        if config not in points:
            result = measure(config)
            if result is None:
                raise SearchStopped
            points[config] = result
        return points[config]

    try:
        point(OFF)
        current = point(starting_point(space, cpu_count))
        improved = True
        while improved:
            improved = False
            for name in PARAMETERS:
                for direction in (+1, -1):
                    # Keep stepping the same way while each step improves.
                    while (nxt := _neighbour(current.config, space, name, direction)) is not None:
                        candidate = point(nxt)
                        if _score(candidate) <= _score(current) or dominated(candidate, points.values()):
                            break
                        current, improved = candidate, True
    except SearchStopped:
        pass
    return list(points.values())
