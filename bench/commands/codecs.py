"""``tfsbench codecs``: payload size and encode/decode cost of every encoding, side by side.

For each (batch size, encoding) cell, on the same image batch:

* ``payload_bytes``: body bytes on the wire (after gzip for row-orjson-gzip);
* ``bytes_per_value``: ``payload_bytes`` per uint8 pixel value (``batch * H * W * 3``);
* ``encode_us``: median client encode time over the repeats (``perf_counter`` around
  ``Encoding.encode`` only, one untimed warm-up call first);
* ``decode_us``: median server-side decode time with the embedded server's own decoder,
  ``bench.serving.json_tensor.decode_predict_body`` (gzip: inflating included; b64: JSON + base64
  decoding only, the PNG/JPEG decoding happens inside the TensorFlow graph); for the gRPC
  encodings, what the gRPC front end does with a request before the model lookup
  (``bench.serving.grpc_api.decode_predict_message``: protobuf parsing, then each input by
  TensorFlow's rules, ``tensor_content`` viewed, not copied);
* ``vs_row_json``: row-json's encode time / this encode time (how many times faster than the
  naive baseline); ``vs_memcpy``: this encode time / ``ndarray.tobytes()`` of the same batch (how
  many times slower than copying the raw bytes).

Rows are printed as a table on stdout (progress on stderr) and, with ``--out``, appended to a
CSV file one batch size at a time, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass, fields, replace
from pathlib import Path

import numpy as np

from bench.errors import ConfigError
from bench.payloads.encodings import Encoding, get_encoding, get_encodings
from bench.payloads.images import image_source
from bench.payloads.specs import BYTES_SIGNATURE, IMAGE_INPUT, InputSpec, reference_signatures
from bench.payloads.tensors import REST_DTYPES
from bench.progress import Progress
from bench.serving.grpc_api import decode_predict_message
from bench.serving.json_tensor import decode_predict_body
from bench.serving.predict_request import DecodedPredict, Signatures

REFERENCE = "row-json"
# Repeats stop early once a cell has spent this long (row-json at batch 64 takes ~1 s a call).
CELL_BUDGET_S = 3.0
MIN_REPEATS = 3


@dataclass(frozen=True)
class CodecRow:
    """One cell of the table: the CSV columns of the architecture's contract, in order."""

    batch: int
    encoding: str
    payload_bytes: int
    bytes_per_value: float
    encode_us: float
    decode_us: float
    vs_row_json: float
    vs_memcpy: float


COLUMNS = tuple(f.name for f in fields(CodecRow))


def _interleaved_medians_us(
    calls: dict[str, Callable[[], object]], repeats: int, budget_s: float = CELL_BUDGET_S
) -> dict[str, float]:
    """Median microseconds of each call, timed round robin: repeat r times every call once.

    On a shared machine, background load comes and goes; interleaving spreads it over all
    calls instead of penalizing whichever happened to run during a busy second. Each call is
    made once untimed first (template builds, imports, first-touch of memory). Slow calls stop
    after ``budget_s`` seconds of their own time once they have ``MIN_REPEATS`` samples.
    """
    for fn in calls.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    spent = dict.fromkeys(calls, 0.0)
    for _ in range(repeats):
        for name, fn in calls.items():
            if spent[name] > budget_s and len(samples[name]) >= min(MIN_REPEATS, repeats):
                continue
            t0 = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - t0
            samples[name].append(elapsed * 1e6)
            spent[name] += elapsed
    return {name: statistics.median(values) for name, values in samples.items()}


def _grpc_decode(body: bytes) -> DecodedPredict:
    return DecodedPredict(decode_predict_message(body), False)


def _server_decoder(encoding: Encoding, signatures: Signatures) -> Callable[[bytes], DecodedPredict]:
    if encoding.protocol == "grpc":
        return _grpc_decode
    if encoding.content_encoding == "gzip":
        return lambda body: decode_predict_body(gzip.decompress(body), signatures)
    return lambda body: decode_predict_body(body, signatures)


def _check_decoded(encoding: Encoding, decoded: DecodedPredict, batch: np.ndarray) -> None:
    """The decoder really received the batch: the timings describe a correct decode."""
    (tensor,) = decoded.tensors.values()
    if encoding.signature_name == BYTES_SIGNATURE:
        ok = len(tensor) == len(batch)
    else:
        ok = np.array_equal(np.asarray(tensor), batch)
    if not ok:
        raise ConfigError(f"server-side decode of {encoding.name} did not give back the batch (encoder bug)")


def float_pixels(images: np.ndarray, input_dtype: str) -> np.ndarray:
    """uint8 images as ``input_dtype`` (TF's short name): floats scaled to [0, 1], as a float model takes them."""
    if input_dtype == "uint8":
        return images
    scaled: np.ndarray = (images.astype(np.float64) / 255.0).astype(REST_DTYPES[input_dtype])
    return scaled


def measure(
    batch_sizes: Sequence[int],
    encodings: Sequence[Encoding],
    source: object,
    repeats: int = 5,
    on_batch: Callable[[list[CodecRow]], None] | None = None,
    progress: Progress | None = None,
    input_dtype: str = "uint8",
) -> list[CodecRow]:
    """Measure every (batch size, encoding) cell; ``on_batch`` gets each batch size's rows as they finish."""
    height, width = source.height, source.width  # type: ignore[attr-defined]
    signatures = reference_signatures(height, width)
    if input_dtype != "uint8":
        # One float image input named like the reference's: what a float32 model's bodies cost.
        signatures = {
            name: {key: replace(spec, dtype=input_dtype) for key, spec in inputs.items()}
            for name, inputs in signatures.items()
        }
    reference = get_encoding(REFERENCE)
    rows: list[CodecRow] = []
    listed = {e.name for e in encodings}
    for batch_size in batch_sizes:
        batch = float_pixels(source.batch(batch_size, index=0), input_dtype)  # type: ignore[attr-defined]
        # uint8 keeps the image path (row-fast); other dtypes go as a named batch (bench.payloads.tensors)
        sent: np.ndarray | dict[str, np.ndarray] = batch if input_dtype == "uint8" else {IMAGE_INPUT: batch}
        if progress:
            progress.show(f"b={batch_size}: encoding")
        # The reference is timed even when not listed, so that every row has its ratio.
        timed = [reference, *(e for e in encodings if e.name != REFERENCE)]
        bodies = {e.name: e.encode(sent) for e in timed}
        encode_calls: dict[str, Callable[[], object]] = {"memcpy": batch.tobytes}
        for encoding in timed:

            def encode_call(enc: Encoding = encoding, images: np.ndarray | dict[str, np.ndarray] = sent) -> object:
                return enc.encode(images)

            encode_calls[encoding.name] = encode_call
        encode_us = _interleaved_medians_us(encode_calls, repeats)
        if progress:
            progress.show(f"b={batch_size}: server-side decoding")
        decode_calls: dict[str, Callable[[], object]] = {}
        for encoding in timed:
            if encoding.name not in listed:
                continue
            decode = _server_decoder(encoding, signatures)
            _check_decoded(encoding, decode(bodies[encoding.name]), batch)

            def decode_call(
                decode: Callable[[bytes], DecodedPredict] = decode, body: bytes = bodies[encoding.name]
            ) -> object:
                return decode(body)

            decode_calls[encoding.name] = decode_call
        decode_us = _interleaved_medians_us(decode_calls, repeats)
        batch_rows = [
            CodecRow(
                batch=batch_size,
                encoding=encoding.name,
                payload_bytes=len(bodies[encoding.name]),
                bytes_per_value=len(bodies[encoding.name]) / batch.size,
                encode_us=encode_us[encoding.name],
                decode_us=decode_us[encoding.name],
                vs_row_json=encode_us[REFERENCE] / encode_us[encoding.name],
                vs_memcpy=encode_us[encoding.name] / encode_us["memcpy"],
            )
            for encoding in encodings
        ]
        if progress:
            progress.step(len(batch_rows))
            progress.show(f"b={batch_size}: done")
        rows.extend(batch_rows)
        if on_batch:
            on_batch(batch_rows)
    return rows


def format_table(rows: Sequence[CodecRow]) -> str:
    """The rows as an aligned text table with units, plus the footnote on what decode covers."""
    header = ("batch", "encoding", "payload", "B/value", "encode ms", "decode ms", "vs row-json", "vs memcpy")
    lines = [header]
    lines.extend(
        (
            str(row.batch),
            row.encoding,
            _human_bytes(row.payload_bytes),
            f"{row.bytes_per_value:.2f}",
            f"{row.encode_us / 1e3:.3f}",
            f"{row.decode_us / 1e3:.3f}",
            f"{row.vs_row_json:.1f}x",
            f"{row.vs_memcpy:,.0f}x",
        )
        for row in rows
    )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        cells = [c.ljust(w) if i == 1 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        out.append("  ".join(cells))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    out.append("")
    out.append("encode: client, median of repeats. decode: server side, bench.serving.json_tensor.decode_predict_body")
    out.append("(the embedded server's decoder); gzip includes inflating; b64 rows are JSON + base64 decoding")
    out.append("only, the PNG/JPEG image decoding happens inside the TensorFlow graph and is not included.")
    out.append("grpc-* rows: payload is the serialized PredictRequest; encode builds and serializes it with the")
    out.append("official protos; decode is the gRPC front end's (bench.serving.grpc_api.decode_predict_message).")
    out.append("vs row-json: times faster than the naive baseline; vs memcpy: times slower than ndarray.tobytes().")
    return "\n".join(out)


def format_targets(rows: Sequence[CodecRow]) -> str:
    """The issue's targets, checked on these measurements (only those the rows allow)."""
    cell = {(r.batch, r.encoding): r for r in rows}
    lines = []
    for batch in sorted({r.batch for r in rows}):
        orj, fast = cell.get((batch, "row-orjson")), cell.get((batch, "row-fast"))
        if orj:
            speed = orj.vs_row_json
            mark = "ok" if speed >= 10 or batch != 16 else "MISSED"
            lines.append(
                f"b={batch}: row-orjson is {speed:.1f}x faster than row-json"
                + (f" [{mark}: >=10x]" if batch == 16 else "")
            )
        grpc = cell.get((batch, "grpc-tensor-content"))
        if orj and grpc:
            speed = orj.encode_us / grpc.encode_us
            mark = "ok" if speed >= 50 else "MISSED"
            lines.append(
                f"b={batch}: grpc-tensor-content encodes {speed:,.0f}x faster than row-orjson, "
                f"payload {grpc.payload_bytes / orj.payload_bytes:.0%} of its bytes"
                + (f" [{mark}: >=50x]" if batch in (16, 64) else "")
            )
            decode = orj.decode_us / grpc.decode_us
            mark = "ok" if decode >= 20 else "MISSED"
            lines.append(
                f"b={batch}: the server decodes grpc-tensor-content {decode:,.0f}x faster than row-orjson's JSON"
                + (f" [{mark}: >=20x]" if batch in (16, 64) else "")
            )
        if orj and fast:
            speed = orj.encode_us / fast.encode_us
            size = fast.payload_bytes / orj.payload_bytes - 1
            target = batch in (16, 64)
            mark = "ok" if speed >= 3 and size <= 0.15 else "MISSED"
            lines.append(
                f"b={batch}: row-fast is {speed:.1f}x faster than row-orjson, payload {size:+.1%}"
                + (f" [{mark}: >=3x, <=+15%]" if target else "")
            )
    return "\n".join(lines)


def _human_bytes(n: int) -> str:
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def _format_csv_value(value: object) -> object:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


class _CsvAppender:
    """Writes the header at once and appends rows as each batch size finishes (flushed)."""

    def __init__(self, path: Path) -> None:
        if path.is_dir():
            raise ConfigError(f"--out {path} is a directory; give a file name such as codecs.csv")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("w", newline="", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write --out {path}: {exc.strerror or exc}") from exc
        self.path = path
        self._writer = csv.writer(self._file)
        self._writer.writerow(COLUMNS)
        self._file.flush()

    def write(self, rows: Sequence[CodecRow]) -> None:
        for row in rows:
            self._writer.writerow([_format_csv_value(v) for v in astuple(row)])
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def run_codecs(args: argparse.Namespace) -> int:
    """Handler of ``tfsbench codecs``."""
    if any(size <= 0 for size in args.batch_sizes):
        raise ConfigError("--batch-sizes must be positive integers")
    encodings = get_encodings(args.encodings)
    repeats = getattr(args, "repeats", 5)
    input_dtype = {"float32": "float", "float64": "double"}.get(getattr(args, "input_dtype", "uint8"), "uint8")
    if input_dtype != "uint8":
        spec = [InputSpec(IMAGE_INPUT, input_dtype, (None, 1, 1, 3))]
        left_out = [e.name for e in encodings if e.refusal(spec)]
        encodings = [e for e in encodings if not e.refusal(spec)]
        if left_out:
            print(f"codecs: {', '.join(left_out)} cannot send a {args.input_dtype} input: left out", file=sys.stderr)
        if not encodings:
            raise ConfigError(f"none of --encodings can send a {args.input_dtype} image input")
    size = getattr(args, "image_size", 128)
    source = image_source(args.images, size, size)
    out = _CsvAppender(args.out) if args.out is not None else None
    progress = Progress(len(args.batch_sizes) * len(encodings), width=30, unit="cells")
    try:
        rows = measure(args.batch_sizes, encodings, source, repeats, out.write if out else None, progress, input_dtype)
    finally:
        progress.line("measured")
        if out:
            out.close()
    print(f"images: {source!r}" + (f" as {args.input_dtype} in [0, 1]" if input_dtype != "uint8" else ""))
    print(format_table(rows))
    targets = format_targets(rows)
    if targets:
        print()
        print(targets)
    if out:
        print(f"\nwrote {out.path}")
    return 0
