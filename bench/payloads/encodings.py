"""Encodings: how a uint8 image batch becomes a TF Serving predict body.

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
=====================  ===============  ==========================================================

Load-generator side: numpy, orjson and Pillow only, never TensorFlow.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import io
import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import orjson
from PIL import Image

from bench.api_names import DEFAULT_SIGNATURE
from bench.errors import ConfigError
from bench.payloads.fast_json import dumps_uint8
from bench.payloads.specs import BYTES_INPUT, BYTES_SIGNATURE, IMAGE_INPUT

# gzip level 1 keeps about 2/3 of the saving of level 6 at 1/8 of its CPU cost: on a load
# generator, level 6 would cost more time than the JSON itself (230 ms against 14 ms at batch 16).
GZIP_LEVEL = 1
JPEG_QUALITY = 90
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


def _image_bytes(image: np.ndarray, fmt: str) -> bytes:
    out = io.BytesIO()
    if fmt == "JPEG":
        Image.fromarray(image).save(out, format="JPEG", quality=JPEG_QUALITY)
    else:
        Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def _b64(fmt: str) -> EncodeFn:
    def encode(batch: np.ndarray, input_name: str, signature_name: str) -> bytes:
        if batch.ndim != 4 or batch.shape[-1] not in (1, 3):
            raise ValueError(f"{fmt} encoding needs images [batch, height, width, 1|3], got {batch.shape}")
        images = batch[..., 0] if batch.shape[-1] == 1 else batch
        instances = [{"b64": base64.b64encode(_image_bytes(image, fmt)).decode("ascii")} for image in images]
        return _request(signature_name, "instances", instances)

    return encode


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

    def encode(self, batch: np.ndarray, input_name: str | None = IMAGE_INPUT) -> bytes:
        """The request body for ``batch`` (uint8 ``[batch, height, width, channels]``).

        ``input_name`` is the signature's input key, used by the encodings that name it
        (columnar-orjson, row-named-orjson); the others send unnamed rows. None picks the
        encoding's own default (``examples``, or ``image_bytes`` for the b64 encodings).
        """
        return self._encode(_check_batch(batch), input_name or self.default_input, self.signature_name)

    def headers(self) -> dict[str, str]:
        """HTTP headers that must go with a body from ``encode``."""
        headers = {"Content-Type": "application/json"}
        if self.content_encoding:
            headers["Content-Encoding"] = self.content_encoding
        return headers

    def with_signature(self, signature_name: str) -> Encoding:
        """The same encoding aimed at another signature of a model, e.g. ``"predict_images"``."""
        return dataclasses.replace(self, signature_name=signature_name)


def _encoding(
    name: str,
    encode: EncodeFn,
    decode: DecodeFn,
    description: str,
    signature_name: str = "",
    content_encoding: str | None = None,
    lossless: bool = True,
) -> Encoding:
    default_input = BYTES_INPUT if signature_name == BYTES_SIGNATURE else IMAGE_INPUT
    return Encoding(name, signature_name, content_encoding, lossless, description, default_input, encode, decode)


# The one place to add an encoding.
_ALL = (
    _encoding("row-orjson", _row_orjson, _decode_rows, "instances, orjson's native numpy serialization"),
    _encoding("row-json", _row_json, _decode_rows, "instances, stdlib json on tolist(): the naive baseline"),
    _encoding("columnar-orjson", _columnar_orjson, _decode_columnar, "inputs {name: batch}, orjson"),
    _encoding("row-named-orjson", _row_named_orjson, _decode_named, "instances of {name: image} objects, orjson"),
    _encoding("row-fast", _row_fast, _decode_rows, "instances, vectorized uint8 writer (bench.payloads.fast_json)"),
    _encoding("row-orjson-gzip", _row_orjson_gzip, _decode_gzip, "row-orjson, gzip level 1", content_encoding="gzip"),
    _encoding("b64-png", _b64("PNG"), _decode_b64, "base64 PNG per image", signature_name=BYTES_SIGNATURE),
    _encoding(
        "b64-jpeg",
        _b64("JPEG"),
        _decode_b64,
        f"base64 JPEG (quality {JPEG_QUALITY}) per image",
        signature_name=BYTES_SIGNATURE,
        lossless=False,
    ),
)

ENCODINGS: dict[str, Encoding] = {encoding.name: encoding for encoding in _ALL}
ENCODING_NAMES: tuple[str, ...] = tuple(ENCODINGS)


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
