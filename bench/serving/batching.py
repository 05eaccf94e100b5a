"""Server-side batching (``--enable_batching``): merge concurrent predict calls into one model run.

Like tensorflow/serving's BatchingSession: session runs of one model version with the same fetches
(one signature's outputs) whose feeds have the same non-batch shapes queue up; a batch is run when it reaches
``max_batch_size`` or ``batch_timeout_micros`` after its first request arrived; outputs are split
back along dimension 0. ``num_batch_threads`` batches run at once; at most
``max_enqueued_batches`` wait. The parameters come from a text-format ``BatchingParameters`` file.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.api_names import INPUT_BATCH_SIZE, PROCESSED_BATCH_SIZE, QUEUING_LATENCY, WRAPPED_RUN_COUNT
from bench.errors import ConfigError
from bench.serving.metrics import Metrics
from bench.serving.status import ServingError
from bench.serving.text_proto import parse_text_proto

__all__ = ["Batcher", "BatchingParameters", "parse_batching_parameters"]


@dataclass(frozen=True)
class BatchingParameters:
    """tensorflow/serving's BatchingParameters (its defaults)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 4


def parse_batching_parameters(path: Path | None) -> BatchingParameters:
    """Read a text-format BatchingParameters file (``max_batch_size { value: 32 }`` or ``: 32``)."""
    if path is None:
        return BatchingParameters()
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"--batching_parameters_file {path}: {exc.strerror}") from exc
    message = parse_text_proto(
        text, f"--batching_parameters_file {path}: Error parsing text-format tensorflow.serving.BatchingParameters"
    )
    values = {}
    for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"):
        if name not in message:
            continue
        raw = message[name][0]
        value = raw.get("value", [None])[0] if isinstance(raw, dict) else raw
        if not isinstance(value, int) or value < 0 or (value == 0 and name != "batch_timeout_micros"):
            raise ConfigError(f"--batching_parameters_file {path}: {name} must be a positive integer, got {value!r}")
        values[name] = value
    return BatchingParameters(**values)


Fetches = tuple[str, ...]
# A session run: (fetches, feeds) -> fetch name -> value (``LoadedVersion.run_session``).
Runner = Callable[[Fetches, Mapping[str, np.ndarray]], dict[str, np.ndarray]]
# (fetches, ((feed name, shape after the batch dimension, dtype string), ...)): one queue each.
_Key = tuple[Fetches, tuple[tuple[str, tuple[int, ...], str], ...]]


class _Task:
    __slots__ = ("enqueued_s", "future", "size", "tensors")

    def __init__(self, tensors: Mapping[str, np.ndarray], size: int) -> None:
        self.tensors = tensors
        self.size = size
        self.future: Future[dict[str, np.ndarray]] = Future()
        self.enqueued_s = time.perf_counter()


class _Queue:
    """Open batches for one (version, signature, input shapes) key."""

    def __init__(self) -> None:
        self.batches: list[list[_Task]] = []
        self.opened_s: list[float] = []


class Batcher:
    """Merges concurrent runs of one model version; ``run(fetches, feeds)`` blocks for its part."""

    def __init__(
        self,
        run: Runner,
        params: BatchingParameters,
        metrics: Metrics | None = None,
        name: str = "model",
    ) -> None:
        self._run = run
        self.params = params
        self._metrics = metrics
        self._name = name
        self._cond = threading.Condition()
        self._queues: dict[_Key, _Queue] = {}
        self._closed = False
        self._threads = [
            threading.Thread(target=self._worker, name=f"tfsbench-batch-{i}", daemon=True)
            for i in range(params.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def run(self, fetches: Fetches, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Queue one request's feeds and wait for its slice of the merged batch's fetched values."""
        sizes = {value.shape[0] if value.ndim else -1 for value in tensors.values()}
        if len(sizes) != 1 or -1 in sizes:
            # tensorflow/serving's batching needs a shared 0th dimension; run such calls alone.
            return self._run(fetches, tensors)
        size = sizes.pop()
        if size > self.params.max_batch_size:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Task size {size} is larger than maximum input batch size {self.params.max_batch_size}",
            )
        key = (fetches, tuple(sorted((k, v.shape[1:], v.dtype.str) for k, v in tensors.items())))
        task = _Task(tensors, size)
        if self._metrics is not None:
            self._metrics.observe(INPUT_BATCH_SIZE, size)
        with self._cond:
            if self._closed:
                raise ServingError("UNAVAILABLE", "Batch scheduler is shutting down")
            queue = self._queues.setdefault(key, _Queue())
            if queue.batches and sum(t.size for t in queue.batches[-1]) + size <= self.params.max_batch_size:
                queue.batches[-1].append(task)
            else:
                if len(queue.batches) >= self.params.max_enqueued_batches:
                    raise ServingError(
                        "UNAVAILABLE", "The batch scheduling queue to which this task was submitted is full"
                    )
                queue.batches.append([task])
                queue.opened_s.append(task.enqueued_s)
            self._cond.notify()
        return task.future.result()

    def _ready(self, now: float) -> tuple[_Key, list[_Task]] | tuple[None, float]:
        """A batch to run now (full, timed out, the oldest when another is queued behind it, or
        anything once closing), else how long to wait."""
        timeout_s = self.params.batch_timeout_micros / 1e6
        wait = 3600.0
        for key, queue in self._queues.items():
            if not queue.batches:
                continue
            first = queue.batches[0]
            full = sum(t.size for t in first) >= self.params.max_batch_size
            due = queue.opened_s[0] + timeout_s
            if full or len(queue.batches) > 1 or now >= due or self._closed:
                queue.batches.pop(0)
                queue.opened_s.pop(0)
                return key, first
            wait = min(wait, due - now)
        return None, wait

    def _worker(self) -> None:
        while True:
            with self._cond:
                while True:
                    key, batch = self._ready(time.perf_counter())
                    if key is not None:
                        break
                    if self._closed:
                        return
                    self._cond.wait(timeout=batch)  # type: ignore[arg-type]
            self._execute(key[0], batch)  # type: ignore[arg-type]

    def _execute(self, fetches: Fetches, batch: list[_Task]) -> None:
        started = time.perf_counter()
        if self._metrics is not None:
            total = sum(t.size for t in batch)
            self._metrics.observe(PROCESSED_BATCH_SIZE, total)
            self._metrics.inc(WRAPPED_RUN_COUNT)
            for task in batch:
                self._metrics.observe(
                    QUEUING_LATENCY,
                    (started - task.enqueued_s) * 1e6,
                    {"thread_pool_name": "model_batch_thread_pool"},
                )
        names = list(batch[0].tensors)
        try:
            merged = {
                name: batch[0].tensors[name] if len(batch) == 1 else np.concatenate([t.tensors[name] for t in batch])
                for name in names
            }
            outputs = self._run(fetches, merged)
        except BaseException as exc:
            for task in batch:
                task.future.set_exception(exc)
            return
        offset = 0
        for task in batch:
            try:
                part = {name: value[offset : offset + task.size] for name, value in outputs.items()}
            except (IndexError, TypeError) as exc:
                task.future.set_exception(ServingError("INTERNAL", f"Cannot split batched output: {exc}"))
                continue
            offset += task.size
            task.future.set_result(part)

    def close(self) -> None:
        """Run what is queued, then stop the batch threads."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=10)
