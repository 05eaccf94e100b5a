"""Capacity planning: the highest request rate one replica serves within a latency SLO.

For each batch size (and encoding) an open-model search runs probes at fixed request rates,
with latency measured from each request's intended send time (no coordinated omission):

1. step up: multiply the rate by ``growth`` until a probe fails the SLO, errors, sends late,
   or the server stops keeping up (achieved rate well below the target: saturation);
2. bisect between the last passing and the first failing rate until they are within
   ``tolerance`` of each other or the probe budget is spent.

A probe passes when its latency percentile meets the SLO, no request failed and the load
generator held its schedule: a send counts as late when it started more than
``max(10 ms, SLO / 4)`` after its intended time, and up to 5 % of sends may be late (the share
at which reports call a client saturated). Their lateness already counts in their latency, so
stray hiccups of a busy generator only make a probe look worse, never better; a generator that
cannot keep up also shows as an achieved rate below the target. Each probe runs until it has recorded
``min_samples`` requests and lasted ``min_measure_s`` after its warm-up (a backlog that grows
slowly needs time to show), or ``max_probe_s`` have passed (Locust start-up included),
whichever comes first; the sample count is reported with the result.

Replicas for a target load: ``ceil(target / (max_images_per_s * (1 - headroom)))``.

This module holds the search (pure: ``probe(rate)`` is passed in) and the command's answer;
bench/capacity_run.py runs the probes with Locust and writes the run directory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

# A probe that achieves less than this share of its target rate has hit the server's limit.
SATURATION_SHARE = 0.9
# Bisection stops when (fail - pass) / pass is below this.
DEFAULT_TOLERANCE = 0.05


@dataclass(frozen=True)
class ProbeResult:
    """One fixed-rate probe: what was asked, what came back."""

    rate_rps: float
    requests: int
    errors: int
    late_sends: int
    achieved_rps: float
    latency_pct_ms: float  # the SLO's percentile, from intended send time
    p50_ms: float
    duration_s: float
    # Late sends tolerated: a few stray hiccups of a busy load generator are already in the
    # latency (counted from the intended send); more mean it could not hold the schedule.
    late_allowed: int = 0

    def meets(self, limit_ms: float) -> bool:
        return (
            self.requests > 0
            and self.errors == 0
            and self.late_sends <= self.late_allowed
            and self.latency_pct_ms <= limit_ms
        )

    @property
    def saturated(self) -> bool:
        return self.achieved_rps < SATURATION_SHARE * self.rate_rps


@dataclass(frozen=True)
class SearchSettings:
    """Bounds of one search; every probe and the whole search stop by themselves."""

    start_rps: float = 2.0
    growth: float = 2.0
    tolerance: float = DEFAULT_TOLERANCE
    max_probes: int = 14
    max_rps: float = 5000.0


@dataclass(frozen=True)
class CapacityResult:
    """The answer for one (batch, encoding) cell."""

    batch: int
    encoding: str
    max_rps: float  # 0 when no probed rate met the SLO
    latency_ms_at_max: float
    samples: int
    probes: list[ProbeResult] = field(default_factory=list)
    stopped_by: str = ""  # why the step-up phase ended: slo, errors, late-sends, saturation, max-rate

    @property
    def max_images_per_s(self) -> float:
        return self.max_rps * self.batch

    @property
    def met_slo(self) -> bool:
        return self.max_rps > 0

    def replicas(self, target_images_per_s: float | None, headroom: float) -> int | None:
        """Replicas needed for ``target_images_per_s``, keeping ``headroom`` of each one spare."""
        if target_images_per_s is None or not self.met_slo:
            return None
        return max(1, math.ceil(target_images_per_s / (self.max_images_per_s * (1.0 - headroom))))


def failure_reason(probe: ProbeResult, limit_ms: float) -> str:
    """Why a probe failed: errors, saturation, late-sends, slo; "" when it did not."""
    if probe.errors:
        return "errors"
    if probe.saturated:
        return "saturation"
    if probe.late_sends > probe.late_allowed:
        return "late-sends"
    if probe.latency_pct_ms > limit_ms:
        return "slo"
    return ""


def search_capacity(
    probe: Callable[[float], ProbeResult],
    limit_ms: float,
    batch: int,
    encoding: str,
    settings: SearchSettings | None = None,
    on_probe: Callable[[ProbeResult, bool], None] | None = None,
) -> CapacityResult:
    """Step up, then bisect, over request rates; ``probe(rate)`` runs one bounded probe."""
    settings = settings or SearchSettings()
    probes: list[ProbeResult] = []

    def run(rate: float) -> tuple[ProbeResult, bool]:
        result = probe(rate)
        ok = result.meets(limit_ms) and not result.saturated
        probes.append(result)
        if on_probe:
            on_probe(result, ok)
        return result, ok

    best: ProbeResult | None = None
    failed_rate: float | None = None
    stopped_by = "max-rate"
    rate = settings.start_rps
    while len(probes) < settings.max_probes and rate <= settings.max_rps:
        result, ok = run(rate)
        if not ok:
            failed_rate, stopped_by = rate, failure_reason(result, limit_ms)
            break
        best = result
        rate *= settings.growth

    low = best.rate_rps if best else 0.0
    high = failed_rate
    while high is not None and len(probes) < settings.max_probes:
        if low > 0 and (high - low) / low <= settings.tolerance:
            break
        if low == 0 and high <= settings.start_rps / 16:
            break  # even a trickle fails: the SLO cannot be met at any useful rate
        mid = (low + high) / 2
        result, ok = run(mid)
        if ok:
            best, low = result, mid
        else:
            high = mid

    if best is None:
        return CapacityResult(batch, encoding, 0.0, math.nan, 0, probes, stopped_by)
    return CapacityResult(batch, encoding, best.rate_rps, best.latency_pct_ms, best.requests, probes, stopped_by)
