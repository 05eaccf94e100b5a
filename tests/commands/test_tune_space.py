"""The tune search on surfaces whose answer is known: it starts where the batching guide says,
finds the best configuration of a unimodal surface without walking the grid, and its front is
exactly the Pareto set (checked against brute force on random points)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.commands.tune_space import (
    EXPERIMENT_MAX_ENQUEUED_BATCHES,
    OFF,
    BatchingConfig,
    Point,
    grid_size,
    pareto_front,
    parse_space,
    recommend,
    search,
    starting_point,
)
from bench.errors import ConfigError

SPACE = "max_batch_size=4,8,16,32,64;batch_timeout_micros=0,1000,2000,5000,10000;num_batch_threads=1,2,4"


def test_parse_space_sorts_and_checks() -> None:
    space = parse_space("max_batch_size=32,8 ; batch_timeout_micros=2000,0")
    assert space == {"max_batch_size": (8, 32), "batch_timeout_micros": (0, 2000)}
    assert grid_size(space) == 5  # 4 batching configurations and batching off


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_batch_size=8;bogus=1", "NAME one of"),
        ("max_batch_size=8;max_batch_size=16", "twice"),
        ("max_batch_size=eight", "needs integers"),
        ("max_batch_size=0", "values >= 1"),
        ("batch_timeout_micros=0", "must give max_batch_size"),
    ],
)
def test_parse_space_refuses_with_one_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_space(text)


def test_the_start_is_the_guides_cpu_only_approach() -> None:
    start = starting_point(parse_space(SPACE), cpu_count=2)
    assert (start.num_batch_threads, start.max_batch_size, start.batch_timeout_micros) == (2, 64, 0)
    assert start.max_enqueued_batches == EXPERIMENT_MAX_ENQUEUED_BATCHES
    assert "max_enqueued_batches { value: 1000000 }" in start.parameters_text()


def _unimodal(best: BatchingConfig) -> dict[BatchingConfig, Point]:
    """A surface that peaks at ``best``: images/s falls with the grid distance from it."""
    space = parse_space(SPACE)
    surface = {OFF: Point(OFF, 100.0, 40.0, True)}
    names = ("max_batch_size", "batch_timeout_micros", "num_batch_threads")
    for values in itertools.product(*(space[k] for k in names)):
        mbs, btm, nbt = values
        config = BatchingConfig(max_batch_size=mbs, batch_timeout_micros=btm, num_batch_threads=nbt)
        distance = sum(abs(space[k].index(getattr(config, k)) - space[k].index(getattr(best, k))) for k in names)
        surface[config] = Point(config, 500.0 - 40.0 * distance, 50.0 + 5.0 * distance, True)
    return surface


@pytest.mark.parametrize(("mbs", "btm", "nbt"), [(16, 2000, 2), (4, 10000, 1), (64, 0, 4), (32, 1000, 1)])
def test_search_finds_the_peak_of_a_unimodal_surface_without_the_grid(mbs: int, btm: int, nbt: int) -> None:
    best = BatchingConfig(max_batch_size=mbs, batch_timeout_micros=btm, num_batch_threads=nbt)
    surface = _unimodal(best)
    measured: list[BatchingConfig] = []

    def measure(config: BatchingConfig) -> Point:
        measured.append(config)
        return surface[config]

    points = search(parse_space(SPACE), 2, measure)
    assert measured[0] == OFF  # the baseline, always
    assert measured[1] == starting_point(parse_space(SPACE), 2)
    assert len(measured) == len(set(measured))  # nothing measured twice
    assert recommend(points) == surface[best]
    assert len(points) < grid_size(parse_space(SPACE)) / 2


def test_search_stops_when_measure_declines_and_keeps_what_it_had() -> None:
    surface = _unimodal(BatchingConfig(max_batch_size=4, batch_timeout_micros=10000, num_batch_threads=1))
    allowed = 4

    def measure(config: BatchingConfig) -> Point | None:
        nonlocal allowed
        allowed -= 1
        return surface[config] if allowed >= 0 else None

    points = search(parse_space(SPACE), 2, measure)
    assert len(points) == 4
    assert points[0].config == OFF


def test_a_resumed_search_replays_and_measures_only_the_rest() -> None:
    surface = _unimodal(BatchingConfig(max_batch_size=8, batch_timeout_micros=5000, num_batch_threads=1))
    done: list[BatchingConfig] = []

    def interrupted(config: BatchingConfig) -> Point | None:
        if len(done) == 5:
            return None  # the budget ran out (or the tune was interrupted) here
        done.append(config)
        return surface[config]

    first = search(parse_space(SPACE), 2, interrupted)
    assert [p.config for p in first] == done
    measured_again: list[BatchingConfig] = []

    def resumed(config: BatchingConfig) -> Point:
        if config not in done:  # what tune.csv does not hold yet
            measured_again.append(config)
        return surface[config]

    full = search(parse_space(SPACE), 2, resumed)
    assert [p.config for p in full][:5] == done  # the same path, replayed
    assert measured_again
    assert not set(measured_again) & set(done)
    assert recommend(full) == surface[BatchingConfig(max_batch_size=8, batch_timeout_micros=5000, num_batch_threads=1)]


def _point(i: int, images: float, latency: float, met: bool = True) -> Point:
    return Point(BatchingConfig(max_batch_size=i + 1), images, latency, met)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(1, 20), st.booleans()), min_size=1, max_size=25))
def test_the_front_is_the_pareto_set(raw: list[tuple[int, int, bool]]) -> None:
    points = [_point(i, float(a), float(b), met) for i, (a, b, met) in enumerate(raw)]
    met = [p for p in points if p.met_slo]
    brute = {
        p.config
        for p in met
        if not any(q.images_per_s >= p.images_per_s and q.latency_ms <= p.latency_ms and
                   (q.images_per_s, q.latency_ms) != (p.images_per_s, p.latency_ms) for q in met)
    }  # fmt: skip
    front = pareto_front(points)
    assert {p.config for p in front} == brute
    best = recommend(points)
    if met:
        assert best is not None
        assert best.images_per_s == max(p.images_per_s for p in met)
        assert best.latency_ms == min(p.latency_ms for p in met if p.images_per_s == best.images_per_s)
    else:
        assert best is None
