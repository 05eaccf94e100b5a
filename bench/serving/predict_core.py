"""The protocol-free predict path that every front end (REST now, gRPC beside it) calls.

As tensorflow/serving keeps ``servables/tensorflow/predict_util.cc``, ``classifier.cc``,
``regressor.cc`` and ``multi_inference.cc`` apart from its HTTP and gRPC handlers, this holds
what a request does once it is decoded: find the servable (``lookup``), run it with the request
deadline and server-side batching (``run`` for Predict, ``classify``, ``regress`` and
``multi_inference`` on serialized ``tf.Example`` inputs), and record the Prometheus metrics
(``record_request``), labelled with the calling front end::

    core = PredictCore(store, metrics, timeout_ms=30000)
    loaded = core.lookup("classifier", version=None, label=None)
    inputs = loaded.signature_inputs("serving_default")      # what the front end decodes against
    outputs = core.run(loaded, "serving_default", tensors)   # ServingError on failure
    core.classify(loaded, "classify_x_to_y", ExampleInput((example_bytes,)))   # ((Class(b"", 3.0),),)
    core.record_request("classifier", "predict", "REST", "OK", latency_us=1234.0)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np

from bench.api_names import (
    DEFAULT_SIGNATURE,
    REQUEST_COUNT,
    REQUEST_EXAMPLE_COUNT_TOTAL,
    REQUEST_EXAMPLE_COUNTS,
    REQUEST_LATENCY,
    RUNTIME_LATENCY,
)
from bench.serving.batching import Batcher, BatchingParameters
from bench.serving.example_inference import (
    ClassificationResult,
    InferencePlan,
    InferenceTask,
    RegressionResult,
    classification_result,
    classify_plan,
    multi_inference_plan,
    multi_inference_results,
    regress_plan,
    regression_result,
)
from bench.serving.example_proto import ExampleInput
from bench.serving.metrics import Metrics
from bench.serving.model_store import ModelStore
from bench.serving.saved_model import LoadedVersion
from bench.serving.status import ServingError

__all__ = ["PredictCore"]

Tensors = Mapping[str, np.ndarray]


class PredictCore:
    """Lookup, run with deadline and batching, metrics: one instance per server, shared by its front ends.

    ``timeout_ms`` > 0 bounds each model run (``DEADLINE_EXCEEDED``); ``batching`` (None: off)
    merges concurrent runs of one version and signature; ``run_threads`` bounds concurrent runs;
    ``method_name_check`` is ``--enable_signature_method_name_check``.
    """

    def __init__(
        self,
        store: ModelStore,
        metrics: Metrics,
        *,
        timeout_ms: int = 30000,
        batching: BatchingParameters | None = None,
        run_threads: int = 8,
        method_name_check: bool = False,
    ) -> None:
        self.store = store
        self.method_name_check = method_name_check
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

    def run(
        self,
        loaded: LoadedVersion,
        signature: str,
        tensors: Tensors,
        output_filter: Sequence[str] = (),
        *,
        timeout_ms: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Predict: run ``signature`` of ``loaded`` on decoded ``tensors`` (input alias -> value)
        within the deadline; output alias -> value (``output_filter``: only those, as gRPC's)."""
        for key, value in tensors.items():
            if value.ndim > 254:
                raise ServingError("INVALID_ARGUMENT", f"tensor parsing error: {key}")
        call = loaded.predict_call(signature, tensors, output_filter, method_name_check=self.method_name_check)
        values = self._session_run(loaded, call.fetches, call.feeds, "Predict", timeout_ms)
        outputs = loaded.signatures[signature or DEFAULT_SIGNATURE].output_tensors
        return {alias: values[outputs[alias]] for alias in call.aliases}

    def classify(
        self, loaded: LoadedVersion, signature: str, examples: ExampleInput, *, timeout_ms: int | None = None
    ) -> ClassificationResult:
        """``RunClassify``: a classification signature on serialized ``tf.Example`` inputs."""
        plan = classify_plan(loaded.signatures, signature, method_name_check=self.method_name_check)
        values = self._run_plan(loaded, plan, examples, "Classify", timeout_ms)
        return classification_result(plan, len(examples.examples), values)

    def regress(
        self, loaded: LoadedVersion, signature: str, examples: ExampleInput, *, timeout_ms: int | None = None
    ) -> RegressionResult:
        """``RunRegress``: a regression signature on serialized ``tf.Example`` inputs."""
        plan = regress_plan(loaded.signatures, signature, method_name_check=self.method_name_check)
        values = self._run_plan(loaded, plan, examples, "Regress", timeout_ms)
        return regression_result(plan, len(examples.examples), values)

    def multi_inference(
        self,
        loaded: LoadedVersion,
        tasks: Sequence[InferenceTask],
        examples: ExampleInput,
        *,
        timeout_ms: int | None = None,
    ) -> tuple[ClassificationResult | RegressionResult, ...]:
        """``RunMultiInference``: several classify/regress tasks of one model in one session run
        (the examples fed to each task's input tensor); results in task order. ``loaded`` is the
        servable of the first task's model spec, as upstream looks it up."""
        plans, feeds, fetches = multi_inference_plan(loaded.signatures, tasks, method_name_check=self.method_name_check)
        tensor = examples.tensor()
        # As upstream, no runtime_latency sample; the example count is recorded per model.
        values = self._session_run(loaded, fetches, {name: tensor for name in feeds}, None, timeout_ms)
        self.metrics.observe(REQUEST_EXAMPLE_COUNTS, len(examples.examples), {"model": loaded.name})
        self.metrics.inc(REQUEST_EXAMPLE_COUNT_TOTAL, {"model": loaded.name}, len(examples.examples))
        return multi_inference_results(plans, len(examples.examples), values)

    def record_request(
        self, model_name: str, api: str, entrypoint: str, code: str, latency_us: float | None = None
    ) -> None:
        """``request_count`` for every request; ``request_latency`` (``latency_us``) for successful ones."""
        if code == "OK" and latency_us is not None:
            self.metrics.observe(
                REQUEST_LATENCY, latency_us, {"model_name": model_name, "API": api, "entrypoint": entrypoint}
            )
        self.metrics.inc(REQUEST_COUNT, {"model_name": model_name, "status": code})

    # -- running ------------------------------------------------------------------------------

    def _run_plan(
        self, loaded: LoadedVersion, plan: InferencePlan, examples: ExampleInput, api: str, timeout_ms: int | None
    ) -> dict[str, np.ndarray]:
        """``PerformOneShotTensorComputation``: the examples as one string tensor, fed and fetched."""
        return self._session_run(loaded, plan.fetches, {plan.feed: examples.tensor()}, api, timeout_ms)

    def _session_run(
        self,
        loaded: LoadedVersion,
        fetches: tuple[str, ...],
        feeds: Tensors,
        api: str | None,
        timeout_ms: int | None,
    ) -> dict[str, np.ndarray]:
        """One Session::Run within the deadline (``timeout_ms``, default the server's; <= 0: none);
        records ``runtime_latency`` for ``api`` when it succeeded."""
        limit_ms = self.timeout_ms if timeout_ms is None else timeout_ms
        if limit_ms <= 0:
            values, runtime_us = self._timed_run(loaded, fetches, feeds)
        else:
            future = self._executor.submit(self._timed_run, loaded, fetches, feeds)
            try:
                values, runtime_us = future.result(timeout=limit_ms / 1000.0)
            except FutureTimeout:
                future.cancel()
                raise ServingError("DEADLINE_EXCEEDED", "Deadline Exceeded") from None
        if api is not None:
            # tensorflow/serving records the Session::Run wall time (a batching session's Run
            # includes its queueing) only when the run succeeded, per API, runtime "TF1".
            self.metrics.observe(RUNTIME_LATENCY, runtime_us, {"model_name": loaded.name, "API": api, "runtime": "TF1"})
        return values

    def _timed_run(
        self, loaded: LoadedVersion, fetches: tuple[str, ...], feeds: Tensors
    ) -> tuple[dict[str, np.ndarray], float]:
        """The fetched values and the run's wall time (microseconds), timed where it runs."""
        started = time.perf_counter()
        if self._batching is None:
            values = loaded.run_session(fetches, feeds)
        else:
            values = self._batcher(loaded).run(fetches, feeds)
        return values, (time.perf_counter() - started) * 1e6

    def _batcher(self, loaded: LoadedVersion) -> Batcher:
        key = (loaded.name, loaded.version)
        with self._batchers_lock:
            batcher = self._batchers.get(key)
            if batcher is None:
                assert self._batching is not None
                batcher = self._batchers[key] = Batcher(loaded.run_session, self._batching, self.metrics, loaded.name)
            return batcher
