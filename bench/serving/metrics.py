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
from typing import Any

from bench.api_names import (
    INPUT_BATCH_SIZE,
    PROCESSED_BATCH_SIZE,
    PROMETHEUS_PATH,
    QUEUING_LATENCY,
    REQUEST_COUNT,
    REQUEST_EXAMPLE_COUNT_TOTAL,
    REQUEST_EXAMPLE_COUNTS,
    REQUEST_LATENCY,
    RUNTIME_LATENCY,
    WRAPPED_RUN_COUNT,
)
from bench.errors import ConfigError
from bench.serving.text_proto import parse_text_proto

__all__ = ["Metrics", "monitoring_config_text", "parse_monitoring_config"]

LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(33))
QUEUE_BUCKETS_US = tuple(100 * 1.2**i for i in range(52))
BATCH_BUCKETS = tuple(float(2**i) for i in range(14))
EXAMPLE_BUCKETS = tuple(float(2**i) for i in range(15))

_HELP = {
    REQUEST_COUNT: ("counter", "The total number of requests."),
    REQUEST_LATENCY: (
        "histogram",
        "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
    ),
    RUNTIME_LATENCY: (
        "histogram",
        "Distribution of wall time (in microseconds) for Tensorflow runtime.",
    ),
    REQUEST_EXAMPLE_COUNTS: ("histogram", "The number of tensorflow.Examples per request."),
    REQUEST_EXAMPLE_COUNT_TOTAL: ("counter", "The total number of tensorflow.Examples."),
    INPUT_BATCH_SIZE: (
        "histogram",
        "Tracks the batch size distribution on the inputs.",
    ),
    PROCESSED_BATCH_SIZE: (
        "histogram",
        "Tracks the batch size distribution on processing.",
    ),
    QUEUING_LATENCY: (
        "histogram",
        "Distribution of wall time spent (in microseconds) in queuing",
    ),
    WRAPPED_RUN_COUNT: (
        "counter",
        "Total count of run calls on the wrapped session",
    ),
}
_BUCKETS = {
    REQUEST_LATENCY: LATENCY_BUCKETS_US,
    RUNTIME_LATENCY: LATENCY_BUCKETS_US,
    INPUT_BATCH_SIZE: BATCH_BUCKETS,
    PROCESSED_BATCH_SIZE: BATCH_BUCKETS,
    QUEUING_LATENCY: QUEUE_BUCKETS_US,
    REQUEST_EXAMPLE_COUNTS: EXAMPLE_BUCKETS,
}


def monitoring_config_text(path: str = PROMETHEUS_PATH) -> str:
    """A text-format MonitoringConfig that turns on the Prometheus endpoint at ``path``."""
    return f'prometheus_config {{\n  enable: true\n  path: "{path}"\n}}\n'


def parse_monitoring_config(path: Path) -> str | None:
    """The Prometheus path from a text-format ``MonitoringConfig``, or None if not enabled."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"--monitoring_config_file {path}: {exc.strerror}") from exc
    message = parse_text_proto(
        text, f"--monitoring_config_file {path}: Error parsing text-format tensorflow.serving.MonitoringConfig"
    )
    prometheus = message.get("prometheus_config", [{}])[0]
    if not isinstance(prometheus, dict):
        raise ConfigError(f"--monitoring_config_file {path}: prometheus_config must be a message")
    if not prometheus.get("enable", [False])[0]:
        return None
    route = str(prometheus.get("path", [""])[0] or PROMETHEUS_PATH)
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
        self._counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        self._histograms: dict[str, dict[tuple[tuple[str, str], ...], list[Any]]] = {}

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

    def render(self) -> str:
        """Prometheus exposition text, families sorted by name. As upstream's exporter, every
        known family has its ``# TYPE`` line, with no samples until something is recorded."""
        lines: list[str] = []
        with self._lock:
            for name in sorted(set(_HELP) | set(self._counters) | set(self._histograms)):
                if name in self._histograms or (name not in self._counters and _HELP[name][0] == "histogram"):
                    lines.append(f"# TYPE {name} histogram")
                    bounds = _BUCKETS[name]
                    for key, (counts, total, count) in sorted(self._histograms.get(name, {}).items()):
                        running = 0
                        for bound, n in zip(bounds, counts, strict=True):
                            running += n
                            lines.append(f"{name}_bucket{_labels((*key, ('le', f'{bound:g}')))} {running}")
                        lines.append(f"{name}_bucket{_labels((*key, ('le', '+Inf')))} {count}")
                        lines.append(f"{name}_sum{_labels(key)} {total:g}")
                        lines.append(f"{name}_count{_labels(key)} {count}")
                else:
                    lines.append(f"# TYPE {name} counter")
                    for key, value in sorted(self._counters.get(name, {}).items()):
                        lines.append(f"{name}{_labels(key)} {value:g}")
        return "\n".join(lines) + "\n"
