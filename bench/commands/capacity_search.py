"""Capacity planning: the highest request rate one replica serves within a latency SLO.

For each batch size (and encoding) an open-model search runs probes at fixed request rates,
with latency measured from each request's intended send time (no coordinated omission):

1. bracket: from a calibrated guess (the throughput a short closed run reached: the ceiling,
   ``ceiling_rps``) or from ``start_rps``, step up while probes pass (up to ``max_rps``, which
   is probed itself) or down while they fail, until one rate passes and a higher one fails;
2. bisect between them until they are within ``tolerance`` of each other or the probe budget
   is spent (the answer then says the tolerance was not reached).

From the ceiling the first steps are small (:data:`CALIBRATED_STEPS`): the answer is rarely
far from it, so the bracket closes in a few probes; later steps use ``growth``.

A probe passes when its latency percentile (successful requests) meets the SLO, no request
failed, the server answered the sends that were due (at least :data:`SATURATION_SHARE` of
those intended in its measured window: counted, not estimated from wall time). Sends late
because their user still waited on the server count in their latency (from the intended send),
so the SLO judges them; they are reported by cause (bench.store.lateness). A probe that fails
while its *generator*
was behind (more than 5 % of sends late with their user idle, or its CPU monitor tripped) is
inconclusive: it says nothing about the server, so it bounds the search like a failure but the
answer then says ``limited_by=generator`` (a lower bound: add --processes or machines), never
server capacity. A pass stands either way: the generator's delays only make a probe look worse.
Each probe runs until it has recorded ``min_samples`` requests and lasted ``min_measure_s``
after its warm-up (a backlog that grows slowly needs time to show), or ``max_probe_s`` have
passed, whichever comes first.

What limited the answer (``limited_by``): ``slo``, ``errors``, ``server-saturation`` (the next
rate up was not answered or fell behind), ``generator``, ``max-rate`` (``--max-rate`` itself
passed), ``max-probes`` (the budget ran out while every probe still passed).

Replicas for a target load: ``ceil(target / (max_images_per_s * (1 - headroom)))``.

This module holds the search (pure: ``probe(rate)`` is passed in); bench.commands.capacity_run
runs the probes with Locust and writes the run directory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

# A probe whose server answered less than this share of the sends due in its window fell behind.
# The count is exact (answered rows against the schedule's own slots), so no allowance for Poisson
# noise is needed; what is left is the overload a short probe absorbs before it shows.
SATURATION_SHARE = 0.95
# Bisection stops when (fail - pass) / pass is below this.
DEFAULT_TOLERANCE = 0.05
# Steps up or down from a calibrated ceiling, one after the other (the answer is rarely far from
# the ceiling: 1.0, 0.91, 0.76, 0.51 of it); later steps use --growth.
CALIBRATED_STEPS = (1.1, 1.2, 1.5)
# Stepping down ends (no capacity) below this fraction of the first probed rate.
FLOOR_SHARE = 1.0 / 16.0
LIMITS = ("slo", "errors", "server-saturation", "generator", "max-rate", "max-probes")


@dataclass(frozen=True)
class ProbeResult:
    """One fixed-rate probe: what was asked, what came back (rows of its measured window)."""

    rate_rps: float
    requests: int  # answered requests intended in the window
    errors: int
    late_sends: int  # later than the tolerance, any cause
    achieved_rps: float  # answered requests / window seconds
    latency_pct_ms: float  # the SLO's percentile of successful requests, from intended send time
    p50_ms: float
    duration_s: float
    # Late sends tolerated (per cause): a few stray hiccups are already in the latency
    # (counted from the intended send); more mean the schedule was not held.
    late_allowed: int = 0
    due: int = 0  # sends intended in the window: answered + never answered; 0 = not known
    late_busy: int = 0  # late because the user waited on the server
    late_idle: int = 0  # late because the generator fell behind
    client_saturated: bool = False  # the load generator's CPU monitor tripped
    latency_ci_low_ms: float = math.nan  # 95 % interval of latency_pct_ms (order statistics)
    latency_ci_high_ms: float = math.nan

    @property
    def answered_share(self) -> float:
        """Of the sends due in the window, the share the server answered (1.0 when not known)."""
        if self.due <= 0:
            return 1.0 if self.requests else 0.0
        return min(1.0, self.requests / self.due)

    @property
    def generator_bound(self) -> bool:
        """The load generator could not keep the schedule: the probe says nothing about the server."""
        return self.client_saturated or self.late_idle > self.late_allowed

    @property
    def saturated(self) -> bool:
        """The server fell behind: it left more than 1 - SATURATION_SHARE of the sends due unanswered.

        Sends late because their user still waited on a reply do not fail a probe by themselves:
        their wait is in their latency (counted from the intended send), so the SLO judges them.
        """
        return self.answered_share < SATURATION_SHARE

    def meets(self, limit_ms: float) -> bool:
        """The SLO part of the verdict: answers, no errors, the percentile within the limit."""
        return self.requests > 0 and self.errors == 0 and self.latency_pct_ms <= limit_ms

    def passes(self, limit_ms: float) -> bool:
        return not failure_reason(self, limit_ms)


@dataclass(frozen=True)
class SearchSettings:
    """Bounds of one search; every probe and the whole search stop by themselves."""

    start_rps: float = 10.0
    growth: float = 2.0
    tolerance: float = DEFAULT_TOLERANCE
    max_probes: int = 12
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
    limited_by: str = ""  # see LIMITS
    tolerance_met: bool = True
    fail_rps: float | None = None  # the lowest failing rate above the answer (None: none failed)
    latency_ci_low_ms: float = math.nan
    latency_ci_high_ms: float = math.nan
    ceiling_rps: float | None = None  # the calibration's closed-loop throughput, where one ran

    @property
    def max_images_per_s(self) -> float:
        return self.max_rps * self.batch

    @property
    def met_slo(self) -> bool:
        return self.max_rps > 0

    @property
    def gap(self) -> float | None:
        """(fail - pass) / pass: how far from the true limit the answer may be (None: not bracketed)."""
        if self.fail_rps is None or not self.max_rps > 0:
            return None
        return (self.fail_rps - self.max_rps) / self.max_rps

    def replicas(self, target_images_per_s: float | None, headroom: float, measured_over: int = 1) -> int | None:
        """Replicas needed for ``target_images_per_s``, keeping ``headroom`` of each one spare.

        ``measured_over``: how many replicas served the measured capacity together (each its share).
        """
        if target_images_per_s is None or not self.met_slo:
            return None
        per_replica = self.max_images_per_s / measured_over
        return max(1, math.ceil(target_images_per_s / (per_replica * (1.0 - headroom))))


def failure_reason(probe: ProbeResult, limit_ms: float) -> str:
    """Why a probe failed (generator, errors, no-requests, server-saturation, slo); "" when it passed.

    A load generator in trouble can only make a probe look worse (its delays are in the latency,
    counted from the intended send, and in the sends it did not make), never better: so a pass
    stands, and a failure while the generator was behind or out of CPU is the generator's.
    """
    if probe.errors:
        reason = "errors"
    elif probe.requests == 0 and probe.due == 0:
        reason = "no-requests"
    elif probe.saturated:
        reason = "server-saturation"
    elif not probe.latency_pct_ms <= limit_ms:
        reason = "slo"
    else:
        return ""
    return "generator" if probe.generator_bound else reason


def search_capacity(
    probe: Callable[[float], ProbeResult],
    limit_ms: float,
    batch: int,
    encoding: str,
    settings: SearchSettings | None = None,
    on_probe: Callable[[ProbeResult, bool], None] | None = None,
    ceiling_rps: float | None = None,
) -> CapacityResult:
    """Bracket, then bisect, over request rates; ``probe(rate)`` runs one bounded probe.

    ``ceiling_rps``: a calibrated guess (the closed-loop throughput ceiling) to start from.
    """
    settings = settings or SearchSettings()
    probes: list[ProbeResult] = []

    def run(rate: float) -> tuple[ProbeResult, bool]:
        result = probe(rate)
        ok = result.passes(limit_ms)
        probes.append(result)
        if on_probe:
            on_probe(result, ok)
        return result, ok

    def budget() -> bool:
        return len(probes) < settings.max_probes

    ceiling = ceiling_rps if ceiling_rps is not None and ceiling_rps > 0 else None
    first = min(ceiling if ceiling is not None else settings.start_rps, settings.max_rps)
    steps = iter(CALIBRATED_STEPS if ceiling is not None else ())

    def step() -> float:
        return next(steps, settings.growth)

    floor = first * FLOOR_SHARE
    low: ProbeResult | None = None  # highest pass
    high: ProbeResult | None = None  # lowest fail above it
    result, ok = run(first)
    if ok:
        low = result
        while low.rate_rps < settings.max_rps and budget():
            result, ok = run(min(low.rate_rps * step(), settings.max_rps))
            if not ok:
                high = result
                break
            low = result
    else:
        high = result
        while budget():
            rate = high.rate_rps / step()
            if rate < floor:
                break
            result, ok = run(rate)
            if ok:
                low = result
                break
            high = result
    while low is not None and high is not None and budget():
        if (high.rate_rps - low.rate_rps) / low.rate_rps <= settings.tolerance:
            break
        result, ok = run((low.rate_rps + high.rate_rps) / 2)
        if ok:
            low = result
        else:
            high = result
    return _answer(batch, encoding, probes, low, high, limit_ms, settings, ceiling)


def _answer(
    batch: int,
    encoding: str,
    probes: list[ProbeResult],
    low: ProbeResult | None,
    high: ProbeResult | None,
    limit_ms: float,
    settings: SearchSettings,
    ceiling_rps: float | None,
) -> CapacityResult:
    if low is None:
        # Nothing passed: the lowest probe's reason is the answer (a trickle failed already).
        lowest = min(probes, key=lambda p: p.rate_rps)
        stepped_to_floor = lowest.rate_rps / settings.growth < probes[0].rate_rps * FLOOR_SHARE
        return CapacityResult(
            batch,
            encoding,
            0.0,
            math.nan,
            0,
            probes,
            failure_reason(lowest, limit_ms) or "slo",
            tolerance_met=stepped_to_floor,
            fail_rps=lowest.rate_rps,
            ceiling_rps=ceiling_rps,
        )
    if high is None:
        limited = "max-rate" if low.rate_rps >= settings.max_rps else "max-probes"
        met = limited == "max-rate"
    else:
        limited = failure_reason(high, limit_ms)
        met = (high.rate_rps - low.rate_rps) / low.rate_rps <= settings.tolerance
    return CapacityResult(
        batch,
        encoding,
        low.rate_rps,
        low.latency_pct_ms,
        low.requests,
        probes,
        limited,
        tolerance_met=met,
        fail_rps=high.rate_rps if high is not None else None,
        latency_ci_low_ms=low.latency_ci_low_ms,
        latency_ci_high_ms=low.latency_ci_high_ms,
        ceiling_rps=ceiling_rps,
    )
