"""Prometheus metrics named like tensorflow/serving's (``--monitoring_config_file``).

tensorflow/serving names its metrics ``/tensorflow/serving/...`` and its exporter turns ``/`` into
``:``, so scrapers see e.g. ``:tensorflow:serving:request_count``. We keep those names:

* ``:tensorflow:serving:request_count{model_name, status}`` counter;
* ``:tensorflow:serving:request_latency{model_name, API, entrypoint}`` histogram (microseconds,
  buckets 10 * 1.8^i like upstream);
* ``:tensorflow:serving:runtime_latency{model_name, API="Predict", runtime="TF1"}`` histogram
  (microseconds): the signature run of each successful predict (with batching on, as upstream's
  batching session, its queueing included);
* ``:tensorflow:serving:batching_session:input_batch_size`` / ``processed_batch_size`` histograms,
  ``queuing_latency`` histogram and ``wrapped_run_count`` counter when batching is on.
"""

from __future__ import annotations

import threading
from pathlib import Path

from bench.errors import ConfigError

__all__ = ["DEFAULT_PROMETHEUS_PATH", "RUNTIME_LATENCY", "Metrics", "parse_monitoring_config"]

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
RUNTIME_LATENCY = ":tensorflow:serving:runtime_latency"
LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(33))
QUEUE_BUCKETS_US = tuple(100 * 1.2**i for i in range(52))
BATCH_BUCKETS = tuple(float(2**i) for i in range(14))

_HELP = {
    ":tensorflow:serving:request_count": ("counter", "The total number of requests."),
    ":tensorflow:serving:request_latency": (
        "histogram",
        "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
    ),
    ":tensorflow:serving:runtime_latency": (
        "histogram",
        "Distribution of wall time (in microseconds) for Tensorflow runtime.",
    ),
    ":tensorflow:serving:batching_session:input_batch_size": (
        "histogram",
        "Tracks the batch size distribution on the inputs.",
    ),
    ":tensorflow:serving:batching_session:processed_batch_size": (
        "histogram",
        "Tracks the batch size distribution on processing.",
    ),
    ":tensorflow:serving:batching_session:queuing_latency": (
        "histogram",
        "Distribution of wall time spent (in microseconds) in queuing",
    ),
    ":tensorflow:serving:batching_session:wrapped_run_count": (
        "counter",
        "Total count of run calls on the wrapped session",
    ),
}
_BUCKETS = {
    ":tensorflow:serving:request_latency": LATENCY_BUCKETS_US,
    ":tensorflow:serving:runtime_latency": LATENCY_BUCKETS_US,
    ":tensorflow:serving:batching_session:input_batch_size": BATCH_BUCKETS,
    ":tensorflow:serving:batching_session:processed_batch_size": BATCH_BUCKETS,
    ":tensorflow:serving:batching_session:queuing_latency": QUEUE_BUCKETS_US,
}


def parse_monitoring_config(path: Path) -> str | None:
    """The Prometheus path from a text-format ``MonitoringConfig``, or None if not enabled."""
    from bench.serving.model_store import parse_text_proto

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"--monitoring_config_file {path}: {exc.strerror}") from exc
    message = parse_text_proto(text, f"--monitoring_config_file {path}")
    prometheus = message.get("prometheus_config", [{}])[0]
    if not isinstance(prometheus, dict):
        raise ConfigError(f"--monitoring_config_file {path}: prometheus_config must be a message")
    if not prometheus.get("enable", [False])[0]:
        return None
    route = str(prometheus.get("path", [""])[0] or DEFAULT_PROMETHEUS_PATH)
    if not route.startswith("/"):
        raise ConfigError(f"--monitoring_config_file {path}: path must start with '/', got {route!r}")
    return route


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in labels)
    return "{" + inner + "}"


class Metrics:
    """A small thread-safe registry of counters and histograms with Prometheus text output."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[tuple, float]] = {}
        self._histograms: dict[str, dict[tuple, list]] = {}

    def inc(self, name: str, labels: dict[str, str] | None = None, value: float = 1.0) -> None:
        key = tuple(sorted((labels or {}).items()))
        with self._lock:
            series = self._counters.setdefault(name, {})
            series[key] = series.get(key, 0.0) + value

    def observe(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        key = tuple(sorted((labels or {}).items()))
        bounds = _BUCKETS[name]
        with self._lock:
            series = self._histograms.setdefault(name, {})
            state = series.get(key)
            if state is None:
                state = series[key] = [[0] * len(bounds), 0.0, 0]
            for i, bound in enumerate(bounds):
                if value <= bound:
                    state[0][i] += 1
                    break
            state[1] += value
            state[2] += 1

    def counter_value(self, name: str, labels: dict[str, str] | None = None) -> float:
        with self._lock:
            return self._counters.get(name, {}).get(tuple(sorted((labels or {}).items())), 0.0)

    def render(self) -> str:
        """Prometheus exposition text."""
        lines: list[str] = []
        with self._lock:
            for name in sorted(self._counters):
                lines.append(f"# TYPE {name} counter")
                for key, value in sorted(self._counters[name].items()):
                    lines.append(f"{name}{_labels(key)} {value:g}")
            for name in sorted(self._histograms):
                lines.append(f"# TYPE {name} histogram")
                bounds = _BUCKETS[name]
                for key, (counts, total, count) in sorted(self._histograms[name].items()):
                    running = 0
                    for bound, n in zip(bounds, counts, strict=True):
                        running += n
                        lines.append(f"{name}_bucket{_labels((*key, ('le', f'{bound:g}')))} {running}")
                    lines.append(f"{name}_bucket{_labels((*key, ('le', '+Inf')))} {count}")
                    lines.append(f"{name}_sum{_labels(key)} {total:g}")
                    lines.append(f"{name}_count{_labels(key)} {count}")
        return "\n".join(lines) + "\n"
