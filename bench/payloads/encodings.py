"""Encodings: how a batch (uint8 images, or any signature's named arrays) becomes a TF Serving predict body.

Each encoding is a small named object (``Encoding``) with the signature it targets, the
``Content-Encoding`` it needs, whether it is lossless, and ``encode(batch) -> bytes``. The
registry ``ENCODINGS`` is built from the ``_ALL`` tuple at the bottom: adding an encoding
means writing its encode/decode pair and one ``Encoding(...)`` line there.

=====================  ===============  ==========================================================
name                   signature        body
=====================  ===============  ==========================================================
row-orjson             serving_default  ``{"instances": batch}``, orjson's native numpy path
row-json               serving_default  ``json.dumps({"instances": batch.tolist()})``: the naive baseline
columnar-orjson        serving_default  ``{"inputs": {"examples": batch}}`` (orjson)
row-named-orjson       serving_default  ``{"instances": [{"examples": image}, ...]}`` (orjson)
row-fast               serving_default  ``{"instances": ...}`` from ``bench.payloads.fast_json`` (vectorized)
row-orjson-gzip        serving_default  row-orjson, gzip level 1, ``Content-Encoding: gzip``
b64-png                serving_bytes    ``{"instances": [{"b64": PNG}, ...]}``
b64-jpeg               serving_bytes    ``{"instances": [{"b64": JPEG q90}, ...]}``
grpc-tensor-content    serving_default  ``PredictRequest``, raw bytes in ``tensor_content`` (gRPC)
grpc-int-val           serving_default  ``PredictRequest``, the dtype's typed field (``int_val``...)
grpc-bytes-png         serving_bytes    ``PredictRequest``, PNG bytes per image in ``string_val``
grpc-bytes-jpeg        serving_bytes    ``PredictRequest``, JPEG q90 bytes per image in ``string_val``
=====================  ===============  ==========================================================

``protocol`` says how a body goes: ``rest`` (POST to ``:predict``) or ``grpc`` (the serialized
``PredictRequest`` of ``bench.payloads.grpc_bodies``, sent to ``PredictionService/Predict`` as it
is). A gRPC body names its model, so a gRPC encoding is aimed at one (``with_model``).

A batch is a uint8 image array (the reference model's one input) or a ``{input: array}`` mapping
(``bench.payloads.tensors``) for any signature: every JSON encoding writes every REST dtype and
several inputs (named instances, or named columns); the b64 encodings send the string inputs'
bytes; row-fast stays a uint8 writer. ``refusal(specs)`` says, before any request, why an
encoding cannot express a signature.

Load-generator side: numpy, orjson and Pillow only; the gRPC encodings load the official protos
(and with them TensorFlow) on their first body.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import orjson
from PIL import Image

from bench.api_names import DEFAULT_SIGNATURE
from bench.errors import ConfigError
from bench.payloads import grpc_bodies, tensors
from bench.payloads.fast_json import dumps_uint8
from bench.payloads.specs import BYTES_INPUT, BYTES_SIGNATURE, IMAGE_INPUT, InputSpec
from bench.payloads.tensors import Batch, ImageBytes

# gzip level 1 keeps about 2/3 of the saving of level 6 at 1/8 of its CPU cost: on a load
# generator, level 6 would cost more time than the JSON itself (230 ms against 14 ms at batch 16).
GZIP_LEVEL = 1
JPEG_QUALITY = tensors.JPEG_QUALITY
# row-fast strips padding from the most-padded images until the body is at most this much
# larger than orjson's compact text (see bench.payloads.fast_json).
FAST_MAX_OVERHEAD = 0.15

_NUMPY = orjson.OPT_SERIALIZE_NUMPY

EncodeFn = Callable[[np.ndarray, str, str], bytes]
DecodeFn = Callable[[bytes], np.ndarray]


def _check_batch(batch: np.ndarray) -> np.ndarray:
    if not isinstance(batch, np.ndarray) or batch.dtype != np.uint8:
        raise TypeError(f"an image batch must be a uint8 numpy array, got {getattr(batch, 'dtype', type(batch))}")
    if batch.ndim < 2 or batch.shape[0] == 0:
        raise ValueError(f"an image batch needs shape [batch, ...] with batch >= 1, got {batch.shape}")
    # orjson serializes only C-contiguous arrays; views from slicing or transposing are not.
    return np.ascontiguousarray(batch)


def _signature_prefix(signature_name: str) -> bytes:
    """``{"signature_name":"...",`` or ``{`` for serving_default (TF Serving's default)."""
    if signature_name in ("", DEFAULT_SIGNATURE):
        return b"{"
    return b"{" + orjson.dumps("signature_name") + b":" + orjson.dumps(signature_name) + b","


def _request(signature_name: str, key: str, value: object, option: int = 0) -> bytes:
    doc: dict[str, object] = {}
    if signature_name not in ("", DEFAULT_SIGNATURE):
        doc["signature_name"] = signature_name
    doc[key] = value
    return orjson.dumps(doc, option=option)


# --- encoders: (batch, input_name, signature_name) -> body -------------------------------------


def _row_orjson(batch: np.ndarray, input_name: str, signature_name: str) -> bytes:
    # list(batch): a list of per-image arrays gives byte-identical output, but orjson writes it
    # about 3x faster than one 4-D array (measured with orjson 3.13: 8.6 against 27 ms at batch 16).
    return _request(signature_name, "instances", list(batch), _NUMPY)


def _row_json(batch: np.ndarray, input_name: str, signature_name: str) -> bytes:
    doc: dict[str, object] = {}
    if signature_name not in ("", DEFAULT_SIGNATURE):
        doc["signature_name"] = signature_name
    doc["instances"] = batch.tolist()
    return json.dumps(doc).encode()


def _columnar_orjson(batch: np.ndarray, input_name: str, signature_name: str) -> bytes:
    return _request(signature_name, "inputs", {input_name: list(batch)}, _NUMPY)  # list(): see _row_orjson


def _row_named_orjson(batch: np.ndarray, input_name: str, signature_name: str) -> bytes:
    return _request(signature_name, "instances", [{input_name: image} for image in batch], _NUMPY)


def _row_fast(batch: np.ndarray, input_name: str, signature_name: str) -> bytes:
    prefix = _signature_prefix(signature_name) + b'"instances":'
    return dumps_uint8(batch, prefix, b"}", max_overhead=FAST_MAX_OVERHEAD)


def _row_orjson_gzip(batch: np.ndarray, input_name: str, signature_name: str) -> bytes:
    # mtime=0: identical batches give identical bodies (no timestamp in the gzip header).
    return gzip.compress(_row_orjson(batch, input_name, signature_name), compresslevel=GZIP_LEVEL, mtime=0)


_image_bytes = tensors.image_bytes


def _b64(fmt: str) -> EncodeFn:
    def encode(batch: np.ndarray, input_name: str, signature_name: str) -> bytes:
        if batch.ndim != 4 or batch.shape[-1] not in (1, 3):
            raise ValueError(f"{fmt} encoding needs images [batch, height, width, 1|3], got {batch.shape}")
        images = batch[..., 0] if batch.shape[-1] == 1 else batch
        instances = [{"b64": base64.b64encode(_image_bytes(image, fmt)).decode("ascii")} for image in images]
        return _request(signature_name, "instances", instances)

    return encode


# --- named batches: (batch, signature_name) -> body -----------------------------------------

NamedEncodeFn = Callable[[Batch, str], bytes]


def _named_rows(named: bool, dumps: tensors.Dumps = tensors.orjson_dumps, fmt: str = "PNG") -> NamedEncodeFn:
    def encode(batch: Batch, signature_name: str) -> bytes:
        return tensors.rows_body(batch, signature_name, named=named, dumps=dumps, image_format=fmt)

    return encode


def _named_columnar(batch: Batch, signature_name: str) -> bytes:
    return tensors.columnar_body(batch, signature_name)


def _named_gzip(batch: Batch, signature_name: str) -> bytes:
    body = tensors.rows_body(batch, signature_name, named=False)
    return gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)


# --- gRPC: a serialized PredictRequest (bench.payloads.grpc_bodies) ---------------------------

GrpcEncodeFn = Callable[[Batch, grpc_bodies.ModelSpec], bytes]


def _grpc(fill: str, fmt: str = "PNG") -> GrpcEncodeFn:
    def encode(batch: Batch, spec: grpc_bodies.ModelSpec) -> bytes:
        return grpc_bodies.request_body(batch, spec, fill=fill, image_format=fmt)

    return encode


def _grpc_image_path(batch: np.ndarray, input_name: str, signature_name: str) -> bytes:
    raise AssertionError("gRPC encodings encode through Encoding.encode")  # never called: see encode


def _decode_grpc(body: bytes) -> np.ndarray:
    _, inputs = grpc_bodies.decode_request(body)
    (value,) = inputs.values()
    return grpc_bodies.decode_images(value) if value.dtype == object else value


# --- client-side decoders, for round-trip tests and checks ------------------------------------


def _decode_rows(body: bytes) -> np.ndarray:
    return np.asarray(orjson.loads(body)["instances"], dtype=np.uint8)


def _decode_columnar(body: bytes) -> np.ndarray:
    inputs = orjson.loads(body)["inputs"]
    if isinstance(inputs, dict):
        (inputs,) = inputs.values()
    return np.asarray(inputs, dtype=np.uint8)


def _decode_named(body: bytes) -> np.ndarray:
    rows = orjson.loads(body)["instances"]
    return np.asarray([next(iter(row.values())) for row in rows], dtype=np.uint8)


def _decode_gzip(body: bytes) -> np.ndarray:
    return _decode_rows(gzip.decompress(body))


def _decode_b64(body: bytes) -> np.ndarray:
    images = []
    for row in orjson.loads(body)["instances"]:
        with Image.open(io.BytesIO(base64.b64decode(row["b64"]))) as image:
            images.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
    return np.stack(images)


@dataclass(frozen=True)
class Encoding:
    """One way of sending an image batch, e.g. ``get_encoding("row-orjson").encode(batch)``.

    ``signature_name``: the signature it targets ("" = serving_default, or "serving_bytes"),
    written into the body unless it is the default. ``content_encoding``: the HTTP
    ``Content-Encoding`` of the body, or None. ``lossless``: whether the server sees exactly
    the batch's integers (JPEG does not).
    """

    name: str
    signature_name: str
    content_encoding: str | None
    lossless: bool
    description: str
    default_input: str
    _encode: EncodeFn = dataclasses.field(repr=False, compare=False)
    _decode: DecodeFn = dataclasses.field(repr=False, compare=False)
    _encode_named: NamedEncodeFn | None = dataclasses.field(default=None, repr=False, compare=False)
    image_format: str | None = None  # b64 encodings: what string inputs' images become
    protocol: str = "rest"  # "rest" or "grpc"
    _encode_grpc: GrpcEncodeFn | None = dataclasses.field(default=None, repr=False, compare=False)
    model_name: str = "classifier"  # gRPC bodies name their model (REST puts it in the URL)
    model_version: int | None = None

    def encode(self, batch: np.ndarray | Batch, input_name: str | None = IMAGE_INPUT) -> bytes:
        """The request body for ``batch``: uint8 images ``[batch, height, width, channels]`` or a
        ``{input: array}`` mapping (``bench.payloads.tensors``).

        ``input_name`` is the signature's input key for an image array, used by the encodings
        that name it (columnar-orjson, row-named-orjson); the others send unnamed rows. None
        picks the encoding's own default (``examples``, or ``image_bytes`` for the b64 encodings).
        A mapping of one uint8 image input (or one image-bytes input, for b64) takes the
        image path, so the reference model's bodies are the same either way.
        """
        if self._encode_grpc is not None:
            return self._encode_grpc(self._grpc_batch(batch, input_name), self.model_spec)
        if isinstance(batch, Mapping):
            if len(batch) == 1:
                ((name, value),) = batch.items()
                if isinstance(value, ImageBytes) and self.image_format:
                    return self._encode(_check_batch(value.images), name, self.signature_name)
                if isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim >= 2:
                    return self._encode(_check_batch(value), name, self.signature_name)
            if self._encode_named is None:
                raise TypeError(f"{self.name} writes one uint8 image input only")
            return self._encode_named(batch, self.signature_name)
        return self._encode(_check_batch(batch), input_name or self.default_input, self.signature_name)

    @property
    def model_spec(self) -> grpc_bodies.ModelSpec:
        """The ``model_spec`` a gRPC body carries."""
        return grpc_bodies.ModelSpec(self.model_name, self.model_version, self.signature_name)

    def _grpc_batch(self, batch: np.ndarray | Batch, input_name: str | None) -> Batch:
        if isinstance(batch, Mapping):
            return batch
        images = _check_batch(batch)
        name = input_name or self.default_input
        if self.image_format:
            # The default image key names the uint8 input; image bytes go to the bytes input.
            name = self.default_input if name == IMAGE_INPUT else name
            if images.ndim != 4 or images.shape[-1] not in (1, 3):
                raise ValueError(f"{self.name} needs images [batch, height, width, 1|3], got {images.shape}")
            return {name: tensors.ImageBytes(images)}
        return {name: images}

    def refusal(self, specs: Sequence[InputSpec]) -> str | None:
        """Why this encoding cannot express a signature with inputs ``specs``, or None when it can."""
        for spec in specs:
            if self.protocol == "grpc":
                reason = grpc_bodies.grpc_refusal(spec.name, spec.dtype)
            else:
                reason = tensors.rest_refusal(spec.name, spec.dtype)
            if reason:
                return reason
        strings = [s.name for s in specs if s.dtype == "string"]
        if self.image_format:
            if not strings:
                return f"{self.name} sends string (bytes) inputs and this signature has none"
        elif strings:
            senders = "grpc-bytes" if self.protocol == "grpc" else "b64"
            return f"input '{strings[0]}' is a string (bytes): only the {senders} encodings send it"
        single_uint8 = len(specs) == 1 and specs[0].dtype == "uint8" and len(specs[0].shape) >= 2
        if self._encode_named is None and self._encode_grpc is None and not single_uint8:
            return f"{self.name} writes a single uint8 input only (of rank 2 or more)"
        return None

    def headers(self) -> dict[str, str]:
        """HTTP headers that must go with a body from ``encode`` (none for gRPC)."""
        if self.protocol == "grpc":
            return {}
        headers = {"Content-Type": "application/json"}
        if self.content_encoding:
            headers["Content-Encoding"] = self.content_encoding
        return headers

    def with_signature(self, signature_name: str) -> Encoding:
        """The same encoding aimed at another signature of a model, e.g. ``"predict_images"``."""
        return dataclasses.replace(self, signature_name=signature_name)

    def with_model(self, model_name: str, model_version: int | None = None) -> Encoding:
        """The same encoding for another model (what a gRPC body names; REST bodies do not change)."""
        return dataclasses.replace(self, model_name=model_name, model_version=model_version)


def _encoding(
    name: str,
    encode: EncodeFn,
    decode: DecodeFn,
    description: str,
    signature_name: str = "",
    content_encoding: str | None = None,
    lossless: bool = True,
    named: NamedEncodeFn | None = None,
    image_format: str | None = None,
    grpc: GrpcEncodeFn | None = None,
) -> Encoding:
    default_input = BYTES_INPUT if signature_name == BYTES_SIGNATURE else IMAGE_INPUT
    return Encoding(
        name, signature_name, content_encoding, lossless, description, default_input, encode, decode, named,
        image_format, "grpc" if grpc else "rest", grpc,
    )  # fmt: skip


# The one place to add an encoding.
_ALL = (
    _encoding(
        "row-orjson", _row_orjson, _decode_rows, "instances, orjson's native numpy serialization",
        named=_named_rows(False),
    ),
    _encoding(
        "row-json", _row_json, _decode_rows, "instances, stdlib json on tolist(): the naive baseline",
        named=_named_rows(False, tensors.json_dumps),
    ),
    _encoding(
        "columnar-orjson", _columnar_orjson, _decode_columnar, "inputs {name: batch}, orjson", named=_named_columnar
    ),
    _encoding(
        "row-named-orjson", _row_named_orjson, _decode_named, "instances of {name: image} objects, orjson",
        named=_named_rows(True),
    ),
    _encoding("row-fast", _row_fast, _decode_rows, "instances, vectorized uint8 writer (bench.payloads.fast_json)"),
    _encoding(
        "row-orjson-gzip", _row_orjson_gzip, _decode_gzip, "row-orjson, gzip level 1", content_encoding="gzip",
        named=_named_gzip,
    ),
    _encoding(
        "b64-png", _b64("PNG"), _decode_b64, "base64 PNG per image", signature_name=BYTES_SIGNATURE,
        named=_named_rows(False, fmt="PNG"), image_format="PNG",
    ),
    _encoding(
        "b64-jpeg", _b64("JPEG"), _decode_b64, f"base64 JPEG (quality {JPEG_QUALITY}) per image",
        signature_name=BYTES_SIGNATURE, lossless=False, named=_named_rows(False, fmt="JPEG"), image_format="JPEG",
    ),
    _encoding(
        "grpc-tensor-content", _grpc_image_path, _decode_grpc, "gRPC PredictRequest, raw bytes in tensor_content",
        grpc=_grpc("content"),
    ),
    _encoding(
        "grpc-int-val", _grpc_image_path, _decode_grpc,
        "gRPC PredictRequest, values in the dtype's typed field (int_val, float_val...)", grpc=_grpc("typed"),
    ),
    _encoding(
        "grpc-bytes-png", _grpc_image_path, _decode_grpc, "gRPC PredictRequest, PNG per image in string_val",
        signature_name=BYTES_SIGNATURE, image_format="PNG", grpc=_grpc("content", "PNG"),
    ),
    _encoding(
        "grpc-bytes-jpeg", _grpc_image_path, _decode_grpc,
        f"gRPC PredictRequest, JPEG (quality {JPEG_QUALITY}) per image in string_val",
        signature_name=BYTES_SIGNATURE, lossless=False, image_format="JPEG", grpc=_grpc("content", "JPEG"),
    ),
)  # fmt: skip

ENCODINGS: dict[str, Encoding] = {encoding.name: encoding for encoding in _ALL}
ENCODING_NAMES: tuple[str, ...] = tuple(ENCODINGS)
PROTOCOLS: tuple[str, ...] = ("rest", "grpc")


def protocol_of(name: str) -> str:
    """``rest`` or ``grpc`` for an encoding name (``rest`` for a name no longer registered)."""
    encoding = ENCODINGS.get(name)
    return encoding.protocol if encoding is not None else "rest"


def get_encoding(name: str) -> Encoding:
    """The encoding called ``name``; ``ConfigError`` listing the valid names otherwise."""
    try:
        return ENCODINGS[name]
    except KeyError:
        raise ConfigError(f"unknown encoding '{name}' (valid: {', '.join(ENCODINGS)})") from None


def get_encodings(names: list[str] | tuple[str, ...]) -> list[Encoding]:
    """``get_encoding`` for each name, reporting every unknown name at once."""
    unknown = [name for name in names if name not in ENCODINGS]
    if unknown:
        raise ConfigError(f"unknown encoding(s) {', '.join(unknown)} (valid: {', '.join(ENCODINGS)})")
    return [ENCODINGS[name] for name in names]


def decode_batch(encoding: Encoding, body: bytes) -> np.ndarray:
    """The uint8 batch that ``body`` (from ``encoding.encode``) carries, decoded client-side."""
    return encoding._decode(body)
