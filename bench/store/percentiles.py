"""Latency percentiles with a 95 % confidence interval from order statistics (distribution-free).

A percentile measured from ``n`` requests is an estimate. Whatever the latency distribution,
the number of samples below the true q-quantile is Binomial(n, q), so two order statistics
``x(l) <= x(u)`` of the sorted sample bracket the true quantile with a probability known
exactly: ``P(x(l) <= true <= x(u)) = B(u - 1) - B(l - 1)`` with ``B`` the Binomial(n, q) CDF. We
take the largest ``l`` with ``B(l - 1) <= 2.5 %`` and the smallest ``u`` with ``B(u - 1) >= 97.5 %``
(each tail at most 2.5 %, so coverage is at least 95 %). No assumption about the shape of the
distribution is made, which matters for latency: it is skewed, multi-modal, heavy-tailed.

When ``n`` is too small for a bound, that end is missing (NaN): 100 requests cannot bound a
p99 from above at 95 % (the 100th sample is the maximum, and the true p99 lies above it with
probability 0.99^100 = 37 %); it takes 368. A percentile is *rough* when an end is missing or
the interval is wider than :data:`ROUGH_WIDTH_SHARE` of the value.

Usage::

    ci = percentile_ci(latencies_ms, 99)       # PercentileCI(q=99, value=..., low=..., high=..., samples=n)
    ci.value, ci.low, ci.high, ci.rough
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

CONFIDENCE = 0.95
# A percentile whose interval is wider than this share of its value (about +-25 %) is rough.
ROUGH_WIDTH_SHARE = 0.5
# The Binomial mass beyond this many standard deviations of its mean is below 1e-30: left out.
_SIGMAS = 12.0


@dataclass(frozen=True)
class PercentileCI:
    """One percentile of a sample with its confidence interval (same unit as the sample).

    ``low``/``high`` are NaN where ``samples`` is too small to bound that side.
    """

    q: float
    value: float
    low: float
    high: float
    samples: int

    @property
    def bounded(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    @property
    def rough(self) -> bool:
        """No interval on one side, or one wider than ROUGH_WIDTH_SHARE of the value."""
        if self.samples == 0 or not self.bounded:
            return True
        if self.value <= 0:
            return self.high > self.low
        return (self.high - self.low) > ROUGH_WIDTH_SHARE * self.value


@lru_cache(maxsize=1024)
def order_statistic_ranks(n: int, q: float, confidence: float = CONFIDENCE) -> tuple[int | None, int | None]:
    """1-based ranks ``(l, u)`` of the order statistics bracketing the q-th percentile (0 < q < 100).

    ``None`` where no rank of ``n`` samples bounds that side at ``confidence``.
    """
    if n <= 0:
        return None, None
    p = q / 100.0
    alpha = (1.0 - confidence) / 2.0
    ks, cdf = _binomial_cdf(n, p)
    # B(l - 1) <= alpha: l - 1 is a k with cdf <= alpha; the largest such k gives l = k + 1.
    below = np.flatnonzero(cdf <= alpha)
    low_rank = int(ks[below[-1]]) + 1 if below.size else None
    # B(u - 1) >= 1 - alpha: the smallest such k gives u = k + 1, if that is a sample (u <= n).
    above = np.flatnonzero(cdf >= 1.0 - alpha)
    high_rank = int(ks[above[0]]) + 1 if above.size else None
    if high_rank is not None and high_rank > n:
        high_rank = None
    return low_rank, high_rank


def _binomial_cdf(n: int, p: float) -> tuple[np.ndarray, np.ndarray]:
    """``(k, P(Bin(n, p) <= k))`` for k in a window of +-12 sigma around the mean (exact pmf via lgamma)."""
    mean = n * p
    sigma = math.sqrt(max(n * p * (1.0 - p), 1e-12))
    lo = max(0, math.floor(mean - _SIGMAS * sigma - 1))
    hi = min(n, math.ceil(mean + _SIGMAS * sigma + 1))
    ks = np.arange(lo, hi + 1)
    log_p, log_q = math.log(p), math.log1p(-p)
    lgamma = np.vectorize(math.lgamma, otypes=[float])
    log_pmf = math.lgamma(n + 1) - lgamma(ks + 1.0) - lgamma(n - ks + 1.0) + ks * log_p + (n - ks) * log_q
    pmf = np.exp(log_pmf)
    # The mass below the window is negligible (< 1e-30) unless the window starts at 0.
    return ks, np.minimum(np.cumsum(pmf), 1.0)


def percentile_ci(values: np.ndarray, q: float, confidence: float = CONFIDENCE) -> PercentileCI:
    """The q-th percentile of ``values`` (numpy's linear interpolation) and its interval."""
    return _from_sorted(np.sort(np.asarray(values, dtype=float)), q, confidence)


def _from_sorted(data: np.ndarray, q: float, confidence: float) -> PercentileCI:
    n = int(data.size)
    if n == 0:
        return PercentileCI(q, math.nan, math.nan, math.nan, 0)
    value = float(np.percentile(data, q))
    low_rank, high_rank = order_statistic_ranks(n, q, confidence)
    low = float(data[low_rank - 1]) if low_rank is not None else math.nan
    high = float(data[high_rank - 1]) if high_rank is not None else math.nan
    return PercentileCI(q, value, low, high, n)


def percentiles_ci(values: np.ndarray, qs: tuple[float, ...], confidence: float = CONFIDENCE) -> list[PercentileCI]:
    """:func:`percentile_ci` for several percentiles of one sample (sorted once)."""
    data = np.sort(np.asarray(values, dtype=float))
    return [_from_sorted(data, q, confidence) for q in qs]
