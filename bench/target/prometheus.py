"""Scrape tensorflow/serving's Prometheus metrics around a sweep cell and turn them into deltas.

tensorflow/serving exposes them only with ``--monitoring_config_file`` (``prometheus_config {
enable: true path: "/monitoring/prometheus/metrics" }``), on the REST port. The families used:

    :tensorflow:serving:request_latency     histogram, microseconds, labels model_name, API, entrypoint
    :tensorflow:serving:runtime_latency     histogram, microseconds (the model run alone), labels
                                            model_name, API ("Predict"), runtime ("TF1")
    :tensorflow:serving:request_count       counter, labels model_name, status
    :tensorflow:serving:batching_session:processed_batch_size   histogram (with batching on)

A cell's server-side numbers are ``after - before`` of these cumulative series, so other
traffic before the cell does not leak in (traffic *during* the cell does; a sweep owns its
target; the sweep takes ``before`` once the cell's first request is recorded, after its warm-up).
Series are matched on every wanted label exactly: one lacking ``model_name`` is another
model's or none's, never ours (the batching families carry no model label upstream, so they
are asked for without one: they are server-wide). A series whose count went down between the
scrapes was reset (the server restarted): its ``after`` is the whole delta, as Prometheus's
``increase()`` reads a reset. Percentiles from histogram buckets are interpolated inside a
bucket, so they are as coarse as the server's bucket bounds; one that falls in the ``+Inf``
bucket is unknown (above the last bound), never that bound. The report labels them as the
server's view.

Usage::

    before = scrape(url)                  # Sample dict, or None when the target exposes none
    ...                                   # run the cell
    stats = server_stats(before, scrape(url), model_name="classifier")
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import requests

from bench.api_names import (
    INPUT_BATCH_SIZE,
    PROCESSED_BATCH_SIZE,
    PROMETHEUS_PATH,
    REQUEST_COUNT,
    REQUEST_LATENCY,
    RUNTIME_LATENCY,
)

BATCH_SIZE_FAMILIES = (
    PROCESSED_BATCH_SIZE,
    INPUT_BATCH_SIZE,
)

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]

_LINE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{.*\})?\s+(\S+)(?:\s+\d+)?$")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text: str) -> Samples:
    """Parse Prometheus text exposition into ``{(name, sorted labels): value}`` (comments skipped)."""
    samples: Samples = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            continue
        name, label_text, value_text = match.groups()
        labels = tuple(sorted(_LABEL.findall(label_text or "")))
        try:
            samples[(name, labels)] = float(value_text)
        except ValueError:
            continue
    return samples


def add(scrapes: Iterable[Samples | None]) -> Samples | None:
    """Several replicas' scrapes as one server's: counters and histogram buckets add up.

    None when any replica exposed nothing (a sum over some replicas would pass for all of them).
    """
    total: Samples = {}
    items = list(scrapes)
    if not items or any(s is None for s in items):
        return None
    for samples in items:
        assert samples is not None
        for key, value in samples.items():
            total[key] = total.get(key, 0.0) + value
    return total


def metrics_url(host: str, path: str = PROMETHEUS_PATH) -> str:
    return host.rstrip("/") + path


def scrape(url: str, timeout_s: float = 5.0) -> Samples | None:
    """The target's samples, or None when it serves no Prometheus metrics at ``url``."""
    try:
        response = requests.get(url, timeout=timeout_s)
    except requests.RequestException:
        return None
    if response.status_code != 200 or "text/plain" not in response.headers.get("Content-Type", "text/plain"):
        return None
    samples = parse_exposition(response.text)
    return samples or None


def exposes(url: str, timeout_s: float = 5.0) -> bool:
    """Whether the target serves Prometheus metrics at ``url``, even none yet (a server with no traffic)."""
    try:
        response = requests.get(url, timeout=timeout_s)
    except requests.RequestException:
        return False
    return response.status_code == 200 and "text/plain" in response.headers.get("Content-Type", "text/plain")


@dataclass(frozen=True)
class HistogramDelta:
    """A histogram's change between two scrapes: ``count``, ``sum`` and cumulative ``buckets`` (le, count)."""

    count: float
    sum: float
    buckets: tuple[tuple[float, float], ...]

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count > 0 else math.nan

    def quantile(self, q: float) -> float:
        """Linear interpolation inside the bucket holding the q-quantile (0 < q < 1).

        ``inf`` when it lies in the ``+Inf`` bucket: above the last finite bound, by how much
        the histogram cannot tell.
        """
        if self.count <= 0 or not self.buckets:
            return math.nan
        rank = q * self.count
        prev_le, prev_count = 0.0, 0.0
        for le, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(le):
                    return math.inf
                span = cumulative - prev_count
                frac = (rank - prev_count) / span if span > 0 else 1.0
                return prev_le + frac * (le - prev_le)
            prev_le, prev_count = le, cumulative
        return math.inf


def _matches(labels: Labels, want: Mapping[str, str]) -> bool:
    """Every wanted label present with the wanted value (other labels may be there too)."""
    d = dict(labels)
    return all(d.get(k) == v for k, v in want.items())


def _series(samples: Samples, name: str, want: Mapping[str, str]) -> dict[Labels, float]:
    return {lab: value for (n, lab), value in samples.items() if n == name and _matches(lab, want)}


def _without_le(labels: Labels) -> Labels:
    return tuple((k, v) for k, v in labels if k != "le")


def histogram_delta(before: Samples, after: Samples, family: str, **labels: str) -> HistogramDelta | None:
    """``after - before`` for one histogram family, summed over series whose labels match.

    A series whose ``_count`` went down was reset between the scrapes: its ``before`` is zero.
    """
    counts_after = _series(after, family + "_count", labels)
    if not counts_after:
        return None
    counts_before = _series(before, family + "_count", labels)
    reset = {lab for lab, value in counts_after.items() if value < counts_before.get(lab, 0.0)}

    def base(samples: dict[Labels, float], lab: Labels) -> float:
        return 0.0 if _without_le(lab) in reset else samples.get(lab, 0.0)

    sums_after, sums_before = _series(after, family + "_sum", labels), _series(before, family + "_sum", labels)
    count = sum(v - base(counts_before, lab) for lab, v in counts_after.items())
    total = sum(v - base(sums_before, lab) for lab, v in sums_after.items())
    by_le: dict[float, float] = {}
    buckets_before = _series(before, family + "_bucket", labels)
    for lab, value in _series(after, family + "_bucket", labels).items():
        le = float(dict(lab).get("le", "nan").replace("+Inf", "inf"))
        by_le[le] = by_le.get(le, 0.0) + value - base(buckets_before, lab)
    return HistogramDelta(count=count, sum=total, buckets=tuple(sorted(by_le.items())))


def counter_delta(before: Samples, after: Samples, family: str, **labels: str) -> float | None:
    """``after - before`` of a counter family over the matching series; a reset series counts from zero."""
    now = _series(after, family, labels)
    if not now:
        return None
    then = _series(before, family, labels)
    return sum(v - (then.get(lab, 0.0) if v >= then.get(lab, 0.0) else 0.0) for lab, v in now.items())


def server_stats(before: Samples | None, after: Samples | None, model_name: str | None = None) -> dict[str, float]:
    """Server-side figures for one cell (ms, images): what the report shows next to client latency.

    Empty when either scrape is missing. Keys: requests, latency_mean_ms, latency_p50_ms,
    latency_p99_ms, runtime_mean_ms, batch_size_mean (each only where the server exports it).
    """
    if before is None or after is None:
        return {}
    want = {"model_name": model_name} if model_name else {}
    out: dict[str, float] = {}
    latency = histogram_delta(before, after, REQUEST_LATENCY, **want, API="predict")
    if latency is not None and latency.count > 0:
        out["requests"] = latency.count
        out["latency_mean_ms"] = latency.mean / 1000.0
        out["latency_p50_ms"] = latency.quantile(0.5) / 1000.0
        out["latency_p99_ms"] = latency.quantile(0.99) / 1000.0
    runtime = histogram_delta(before, after, RUNTIME_LATENCY, **want, API="Predict")
    if runtime is not None and runtime.count > 0:
        out["runtime_mean_ms"] = runtime.mean / 1000.0
    if "requests" not in out:
        count = counter_delta(before, after, REQUEST_COUNT, **want)
        if count:
            out["requests"] = count
    for family in BATCH_SIZE_FAMILIES:
        batch = histogram_delta(before, after, family)  # server-wide: upstream gives them no model label
        if batch is not None and batch.count > 0:
            out["batch_size_mean"] = batch.mean
            break
    # A percentile in the +Inf bucket (inf) or of nothing (NaN) is not a number to report.
    return {k: float(v) for k, v in out.items() if math.isfinite(v)}
