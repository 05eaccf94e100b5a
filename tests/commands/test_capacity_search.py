"""The capacity search logic, driven by an analytic single-server queue instead of a network.

The end-to-end capacity tests (real Locust against a loopback server) live in test_capacity.py;
these check the search itself: step up, bisect, stop reasons and replica arithmetic.
"""

from __future__ import annotations

import math

import pytest

from bench.commands.capacity_search import CapacityResult, ProbeResult, SearchSettings, search_capacity


def deterministic_queue(service_ms: float, duration_s: float = 10.0, error_above_rps: float | None = None):
    """Constant arrivals into one server with a fixed service time (D/D/1).

    Below capacity every request takes ``service_ms``; above it the backlog grows linearly,
    so the worst latency is the backlog at the end of the probe.
    """
    capacity = 1000.0 / service_ms

    def probe(rate: float) -> ProbeResult:
        requests = int(rate * duration_s)
        if rate <= capacity:
            worst = service_ms
            achieved = rate
        else:
            backlog_s = duration_s * (1 - capacity / rate)
            worst = service_ms + backlog_s * 1000
            achieved = capacity
        errors = requests if error_above_rps is not None and rate > error_above_rps else 0
        return ProbeResult(rate, requests, errors, 0, achieved, worst, service_ms, duration_s)

    return probe


@pytest.mark.parametrize("service_ms", [pytest.param(22.0, id="22ms"), pytest.param(7.0, id="7ms")])
def test_finds_the_service_rate_within_tolerance(service_ms: float) -> None:
    result = search_capacity(deterministic_queue(service_ms), limit_ms=100.0, batch=1, encoding="row-orjson")
    analytic = 1000.0 / service_ms
    assert result.met_slo
    # A finite probe tolerates a small overload before its backlog breaks the SLO.
    assert result.max_rps == pytest.approx(analytic, rel=0.06)
    assert result.stopped_by in {"saturation", "slo"}
    # Every probe is recorded, and the budget bounds them.
    assert 1 < len(result.probes) <= SearchSettings().max_probes


def test_slo_tighter_than_the_service_time_has_no_capacity() -> None:
    result = search_capacity(deterministic_queue(50.0), limit_ms=20.0, batch=4, encoding="b64-png")
    assert not result.met_slo
    assert result.max_rps == 0
    assert math.isnan(result.latency_ms_at_max)
    assert result.replicas(2000, 0.3) is None


def test_errors_cap_capacity_below_their_onset() -> None:
    result = search_capacity(
        deterministic_queue(5.0, error_above_rps=60.0), limit_ms=100.0, batch=1, encoding="row-orjson"
    )
    assert 0 < result.max_rps <= 60.0
    assert result.max_rps >= 60.0 * 0.9
    assert result.stopped_by == "errors"


def test_images_per_second_and_replicas() -> None:
    result = CapacityResult(batch=16, encoding="row-orjson", max_rps=10.0, latency_ms_at_max=80.0, samples=500)
    assert result.max_images_per_s == 160.0
    # 2000 img/s with 30 % headroom: 2000 / (160 * 0.7) = 17.86 -> 18 replicas.
    assert result.replicas(2000.0, 0.3) == 18
    assert result.replicas(100.0, 0.0) == 1
    assert result.replicas(None, 0.3) is None
