"""Named-array batches and their JSON bodies, for any signature tensorflow/serving's REST API takes.

A *batch* is ``{input name: array}``, every array with the same first (batch) dimension::

    batch = {"pixels": np.zeros((2, 96, 96, 3), np.float32), "threshold": np.array([0.5, 0.5], np.float32)}
    rows_body(batch, "", named=True)     # {"instances":[{"pixels":[[...]],"threshold":0.5}, ...]}
    columnar_body(batch, "")             # {"inputs":{"pixels":[...],"threshold":[0.5,0.5]}}

String inputs hold ``object`` arrays of ``bytes`` (sent as ``{"b64": ...}``) or an
:class:`ImageBytes` (uint8 images that become PNG or JPEG bytes when the body is written, so that
the encode time counts the compression, as a client would pay it).

Values are written so that tensorflow/serving's parser (``json_tensor.cc``, ported in
``bench.serving.json_tensor``) rebuilds exactly the same tensor: orjson writes a float32 as its
shortest round-trip text, which parses to a double that casts back to the same float32; the
stdlib path writes the double of each float32, also exact. float16 is not in the table: the REST
API has no JSON conversion for ``DT_HALF`` (the server answers UNIMPLEMENTED).
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from PIL import Image

from bench.api_names import DEFAULT_SIGNATURE

JPEG_QUALITY = 90
_NUMPY = orjson.OPT_SERIALIZE_NUMPY

# TF short dtype name (as TF Serving's metadata says it) -> numpy dtype of a batch array, for the
# dtypes tensorflow/serving's JSON parser converts.
REST_DTYPES: dict[str, Any] = {
    "uint8": np.uint8,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "uint32": np.uint32,
    "uint64": np.uint64,
    "float": np.float32,
    "double": np.float64,
    "bool": np.bool_,
    "string": object,
}
_NUMPY_NAMES = {"float": "float32", "double": "float64", "half": "float16", "bfloat16": "bfloat16", "string": "string"}


def numpy_name(dtype: str) -> str:
    """TF's short dtype name as numpy names it: ``float`` -> ``float32``, ``double`` -> ``float64``."""
    return _NUMPY_NAMES.get(dtype, dtype)


def rest_refusal(name: str, dtype: str) -> str | None:
    """Why an input of ``dtype`` cannot be sent as JSON, or None when it can."""
    if dtype in REST_DTYPES:
        return None
    return (
        f"input '{name}' is {numpy_name(dtype)}, which tensorflow/serving's REST API cannot parse from JSON "
        f"(it converts {', '.join(numpy_name(d) for d in REST_DTYPES)}); use gRPC or a signature that casts"
    )


@dataclass(frozen=True)
class ImageBytes:
    """uint8 images ``[batch, height, width, 1|3]`` that a string input receives as encoded PNG/JPEG."""

    images: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def encoded(self, fmt: str) -> list[bytes]:
        """Each image as ``fmt`` ("PNG" or "JPEG", quality 90) bytes."""
        images = self.images[..., 0] if self.images.shape[-1] == 1 else self.images
        return [image_bytes(image, fmt) for image in images]


Batch = Mapping[str, "np.ndarray | ImageBytes"]


def image_bytes(image: np.ndarray, fmt: str) -> bytes:
    out = io.BytesIO()
    if fmt == "JPEG":
        Image.fromarray(image).save(out, format="JPEG", quality=JPEG_QUALITY)
    else:
        Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def batch_size(batch: Batch) -> int:
    """The common first dimension of every input; ValueError when they disagree or the batch is empty."""
    if not batch:
        raise ValueError("a batch needs at least one input")
    sizes = {name: len(value) for name, value in batch.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"inputs of one batch must have the same batch size, got {sizes}")
    size = next(iter(sizes.values()))
    if size == 0:
        raise ValueError("a batch needs at least one example")
    return size


def _b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode("ascii")}


def _strings(value: np.ndarray | ImageBytes, fmt: str) -> list[dict[str, str]] | None:
    """A string input's per-example ``{"b64": ...}`` objects, or None for a numeric input."""
    if isinstance(value, ImageBytes):
        return [_b64(data) for data in value.encoded(fmt)]
    if value.dtype == object or value.dtype.kind in "SU":
        return [_b64(v.encode() if isinstance(v, str) else bytes(v)) for v in value.reshape(len(value), -1)[:, 0]]
    return None


def _prepare(batch: Batch, fmt: str, plain: bool) -> dict[str, list[Any] | np.ndarray]:
    """Per input: b64 objects for strings, else the contiguous array (or its ``tolist()`` for stdlib json)."""
    out: dict[str, list[Any] | np.ndarray] = {}
    for name, value in batch.items():
        strings = _strings(value, fmt)
        if strings is not None:
            out[name] = strings
        else:
            assert isinstance(value, np.ndarray)
            # orjson serializes only C-contiguous arrays; views from slicing are not.
            out[name] = value.tolist() if plain else np.ascontiguousarray(value)
    return out


def _column(values: list[Any] | np.ndarray) -> list[Any]:
    # list(array): a list of per-example arrays serializes byte-identically to the whole array,
    # and orjson writes it about 3x faster (see bench.payloads.encodings).
    return values if isinstance(values, list) else list(values)


Dumps = Callable[[dict[str, Any]], bytes]


def orjson_dumps(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc, option=_NUMPY)


def json_dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def _document(signature_name: str, key: str, value: object) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if signature_name not in ("", DEFAULT_SIGNATURE):
        doc["signature_name"] = signature_name
    doc[key] = value
    return doc


def rows_body(
    batch: Batch, signature_name: str, *, named: bool, dumps: Dumps = orjson_dumps, image_format: str = "PNG"
) -> bytes:
    """``{"instances": [...]}``: plain values for one unnamed input, else one object per example.

    tensorflow/serving takes plain instances only for a single-input signature, so several
    inputs are always written as named objects.
    """
    size = batch_size(batch)
    columns = _prepare(batch, image_format, dumps is json_dumps)
    if len(columns) == 1 and not named:
        (values,) = columns.values()
        return dumps(_document(signature_name, "instances", _column(values)))
    instances = [{name: values[i] for name, values in columns.items()} for i in range(size)]
    return dumps(_document(signature_name, "instances", instances))


def columnar_body(
    batch: Batch, signature_name: str, *, dumps: Dumps = orjson_dumps, image_format: str = "PNG"
) -> bytes:
    """``{"inputs": {name: [...], ...}}``: one column per input."""
    batch_size(batch)
    columns = _prepare(batch, image_format, dumps is json_dumps)
    return dumps(_document(signature_name, "inputs", {name: _column(values) for name, values in columns.items()}))


def value_bytes(batch: Batch) -> int:
    """The raw size of the batch's values (numpy ``nbytes``; string inputs: their encoded length)."""
    total = 0
    for value in batch.values():
        if isinstance(value, ImageBytes):
            total += int(value.images.nbytes)
        elif value.dtype == object:
            total += sum(len(v) for v in value.ravel())
        else:
            total += int(value.nbytes)
    return total
