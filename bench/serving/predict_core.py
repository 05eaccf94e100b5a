"""The protocol-free predict path that every front end (REST now, gRPC beside it) calls.

As tensorflow/serving keeps ``servables/tensorflow/predict_util.cc`` apart from its HTTP and gRPC
handlers, this holds what a predict does once its tensors are decoded: find the servable
(``lookup``), run the signature with the request deadline and server-side batching (``run``), and
record the Prometheus metrics (``record_request``), labelled with the calling front end::

    core = PredictCore(store, metrics, timeout_ms=30000)
    loaded = core.lookup("classifier", version=None, label=None)
    inputs = loaded.signature_inputs("serving_default")      # what the front end decodes against
    outputs = core.run(loaded, "serving_default", tensors)   # ServingError on failure
    core.record_request("classifier", "predict", "REST", "OK", latency_us=1234.0)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np

from bench.api_names import REQUEST_COUNT, REQUEST_LATENCY, RUNTIME_LATENCY
from bench.serving.batching import Batcher, BatchingParameters
from bench.serving.metrics import Metrics
from bench.serving.model_store import ModelStore
from bench.serving.saved_model import LoadedVersion
from bench.serving.status import ServingError

__all__ = ["PredictCore"]

Tensors = Mapping[str, np.ndarray]


class PredictCore:
    """Lookup, run with deadline and batching, metrics: one instance per server, shared by its front ends.

    ``timeout_ms`` > 0 bounds each model run (``DEADLINE_EXCEEDED``); ``batching`` (None: off)
    merges concurrent runs of one version and signature; ``run_threads`` bounds concurrent runs.
    """

    def __init__(
        self,
        store: ModelStore,
        metrics: Metrics,
        *,
        timeout_ms: int = 30000,
        batching: BatchingParameters | None = None,
        run_threads: int = 8,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.timeout_ms = timeout_ms
        self._batching = batching
        self._batchers: dict[tuple[str, int], Batcher] = {}
        self._batchers_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=max(run_threads, 1), thread_name_prefix="tfsbench-run")

    def close(self) -> None:
        """Finish the runs in flight, then stop the batchers and the run pool."""
        self._executor.shutdown(wait=True)
        with self._batchers_lock:
            batchers, self._batchers = list(self._batchers.values()), {}
        for batcher in batchers:
            batcher.close()

    def lookup(self, name: str, version: int | None, label: str | None) -> LoadedVersion:
        """``GetServableHandle``: the version a request means, or the reference's NOT_FOUND/INVALID_ARGUMENT."""
        return self.store.lookup(name, version, label)

    def run(self, loaded: LoadedVersion, signature: str, tensors: Tensors) -> dict[str, np.ndarray]:
        """Run ``signature`` of ``loaded`` on decoded ``tensors`` within the deadline; record its runtime."""
        for key, value in tensors.items():
            if value.ndim > 254:
                raise ServingError("INVALID_ARGUMENT", f"tensor parsing error: {key}")
        if self.timeout_ms <= 0:
            outputs, runtime_us = self._timed_run(loaded, signature, tensors)
        else:
            future = self._executor.submit(self._timed_run, loaded, signature, tensors)
            try:
                outputs, runtime_us = future.result(timeout=self.timeout_ms / 1000.0)
            except FutureTimeout:
                future.cancel()
                raise ServingError("DEADLINE_EXCEEDED", "Deadline Exceeded") from None
        # tensorflow/serving's RunPredict records the Session::Run wall time (a batching session's
        # Run includes its queueing) only when the run succeeded, as API "Predict", runtime "TF1".
        self.metrics.observe(
            RUNTIME_LATENCY, runtime_us, {"model_name": loaded.name, "API": "Predict", "runtime": "TF1"}
        )
        return outputs

    def record_request(
        self, model_name: str, api: str, entrypoint: str, code: str, latency_us: float | None = None
    ) -> None:
        """``request_count`` for every request; ``request_latency`` (``latency_us``) for successful ones."""
        if code == "OK" and latency_us is not None:
            self.metrics.observe(
                REQUEST_LATENCY, latency_us, {"model_name": model_name, "API": api, "entrypoint": entrypoint}
            )
        self.metrics.inc(REQUEST_COUNT, {"model_name": model_name, "status": code})

    def _timed_run(
        self, loaded: LoadedVersion, signature: str, tensors: Tensors
    ) -> tuple[dict[str, np.ndarray], float]:
        """The model's outputs and the run's wall time (microseconds), timed where it runs."""
        started = time.perf_counter()
        if self._batching is None:
            outputs = loaded.run(signature, tensors)
        else:
            outputs = self._batcher(loaded).run(signature, tensors)
        return outputs, (time.perf_counter() - started) * 1e6

    def _batcher(self, loaded: LoadedVersion) -> Batcher:
        key = (loaded.name, loaded.version)
        with self._batchers_lock:
            batcher = self._batchers.get(key)
            if batcher is None:
                assert self._batching is not None
                batcher = self._batchers[key] = Batcher(loaded.run, self._batching, self.metrics, loaded.name)
            return batcher
