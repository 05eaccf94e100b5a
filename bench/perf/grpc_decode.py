"""Benchmark: server-side decode of a gRPC ``tensor_content`` request vs the fast JSON decode.

``python -m bench.perf.grpc_decode [--batch-sizes 16,64] [--repeat 7]`` prints, for the same
uint8 [b,128,128,3] batch measured side by side (best of ``--repeat``):

* JSON: ``bench.serving.json_tensor.decode_predict_body`` on the row-format body
  (``{"instances": ...}`` as orjson writes it), the REST front end's decoder with its numpy
  fast path;
* gRPC: ``bench.serving.grpc_api.decode_predict_message`` on the serialized ``PredictRequest``
  (``tf.make_tensor_proto``: ``tensor_content``), the gRPC front end's decode: protobuf parse,
  then ``np.frombuffer``;

and the ratio (target: >= 20x at batch 16 and 64). ``grpc_decode_rows`` returns the same rows
for other reports (``tfsbench codecs``).
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import orjson

from bench import argtypes
from bench.payloads.specs import IMAGE_INPUT, InputSpec
from bench.serving.grpc_api import decode_predict_message
from bench.serving.json_tensor import decode_predict_body
from bench.tensorflow_import import import_tensorflow

TARGET_RATIO = 20.0


@dataclass(frozen=True)
class DecodeRow:
    """One batch size: body sizes, best decode times (ms) and JSON time / gRPC time."""

    batch: int
    json_bytes: int
    grpc_bytes: int
    json_ms: float
    grpc_ms: float

    @property
    def ratio(self) -> float:
        return self.json_ms / self.grpc_ms if self.grpc_ms > 0 else float("inf")


def _best_ms(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def grpc_request_bytes(batch: np.ndarray, model_name: str = "classifier", alias: str = "examples") -> bytes:
    """A serialized ``PredictRequest`` as the official client builds it (``tf.make_tensor_proto``)."""
    tf = import_tensorflow()
    # lazy: the serving protos import TensorFlow's
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.inputs[alias].CopyFrom(tf.make_tensor_proto(batch))
    return bytes(request.SerializeToString())


def grpc_decode_rows(batch_sizes: Sequence[int] = (16, 64), repeat: int = 7) -> list[DecodeRow]:
    """Measure both decoders on the same batches, interleaved per batch size; each decode is
    checked to give back the batch before it is timed."""
    spec = InputSpec(IMAGE_INPUT, "uint8", (None, 128, 128, 3))
    inputs = {IMAGE_INPUT: spec}
    rows = []
    for size in batch_sizes:
        batch = np.random.default_rng(size).integers(0, 256, (size, 128, 128, 3), dtype=np.uint8)
        body = orjson.dumps({"instances": batch.tolist()})
        message = grpc_request_bytes(batch)
        if not np.array_equal(decode_predict_body(body, inputs).tensors[IMAGE_INPUT], batch):
            raise AssertionError("JSON decode did not give back the batch")
        if not np.array_equal(decode_predict_message(message)[IMAGE_INPUT], batch):
            raise AssertionError("gRPC decode did not give back the batch")
        json_ms = _best_ms(functools.partial(decode_predict_body, body, inputs), repeat)
        grpc_ms = _best_ms(functools.partial(decode_predict_message, message), repeat)
        rows.append(DecodeRow(size, len(body), len(message), json_ms, grpc_ms))
    return rows


def format_rows(rows: Sequence[DecodeRow]) -> str:
    lines = [
        f"{'batch':>5} {'JSON MB':>8} {'gRPC MB':>8} {'JSON decode ms':>15} {'gRPC decode ms':>15} {'ratio':>8}",
    ]
    lines += [
        f"{row.batch:>5} {row.json_bytes / 1e6:>8.2f} {row.grpc_bytes / 1e6:>8.2f} {row.json_ms:>15.3f} "
        f"{row.grpc_ms:>15.3f} {row.ratio:>7.0f}x"
        for row in rows
    ]
    met = all(row.ratio >= TARGET_RATIO for row in rows)
    lines.append(
        f"target: gRPC tensor_content decode >= {TARGET_RATIO:g}x faster than the fast JSON decode: "
        + ("met" if met else "NOT met")
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf.grpc_decode", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=argtypes.int_list, default=[16, 64], metavar="LIST")
    parser.add_argument("--repeat", type=argtypes.positive_int, default=7, metavar="N", help="best of N (default 7)")
    args = parser.parse_args(argv)
    print(format_rows(grpc_decode_rows(args.batch_sizes, args.repeat)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
