"""TensorFlow-free JSON <-> tensor conversion with tensorflow/serving's exact rules and messages.

This is a port of ``tensorflow_serving/util/json_tensor.cc`` (see the reference
``shared/docs/tf-serving-rest-api.md`` §5): predict bodies in row (``instances``) and columnar
(``inputs``) format, named and unnamed instances, ``{"b64": ...}`` strings, the shape taken from
the first entry at every level, uint8 values wrapping like TF's ``int_val`` cast, and the order in
which errors are found (the response side is ``bench.serving.json_response``). It is used by the
embedded server and, without TensorFlow, by ``tfsbench codecs`` to time server-side decoding::

    decoded = decode_predict_body(body, REFERENCE_SIGNATURES)   # or one signature's inputs
    decoded.tensors["examples"]      # np.ndarray uint8 [batch, 128, 128, 3]

Hot bodies (uint8 images) go through ``bench.serving.fast_decode`` first, which reads the digits straight
from the bytes with numpy; anything it is not sure about comes back here, so acceptance and
error texts never depend on which path ran.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import numpy as np

from bench.payloads.specs import InputSpec
from bench.payloads.tensors import REST_DTYPES
from bench.serving.fast_decode import try_fast_decode
from bench.serving.predict_request import DecodedPredict, Inputs, resolve_inputs
from bench.serving.rapidjson import JsonParseError, debug_string, json_type_name, loads
from bench.serving.status import ServingError
from bench.serving.status import invalid_argument as _invalid

__all__ = ["b64decode", "decode_predict_body", "is_b64_object", "parse_request_json", "request_signature_name"]

# TF short dtype name -> numpy dtype of the tensor we build (the table the client's encodings use).
_NUMPY = REST_DTYPES
_INT32_TYPES = frozenset(("uint8", "int8", "int16", "int32"))


# -- parsing the document ---------------------------------------------------------------------


def parse_request_json(body: bytes | bytearray) -> dict[str, Any]:
    """``ParseJson``: the body as a JSON object, or the reference's parse/``Is not object`` error."""
    if not body:
        raise _invalid("JSON Parse error: The document is empty")
    try:
        doc = loads(body)
    except JsonParseError as exc:
        raise _invalid(f"JSON Parse error: {exc}") from None
    if not isinstance(doc, dict):
        raise _invalid(f"JSON Value: {debug_string(doc)} Is not object")
    return doc


def request_signature_name(doc: dict[str, Any]) -> str:
    """``FillSignature``: the body's ``signature_name`` ("" when absent), or the reference's error."""
    if "signature_name" in doc:
        name = doc["signature_name"]
        if not isinstance(name, str):
            raise _invalid(
                f"JSON Value: {debug_string(doc)} not formatted correctly. 'signature_name' key must be a string value."
            )
        return name
    return ""


def decode_predict_body(
    body: bytes | bytearray,
    inputs: Inputs,
    *,
    fast: bool = True,
) -> DecodedPredict:
    """Decode a ``:predict`` body into numpy tensors, exactly as tensorflow/serving accepts it.

    ``inputs`` is one signature's input map, a map of signature name -> input map (unknown
    ``signature_name`` -> the reference's error), or a callable ``resolve(signature_name)``
    that may raise ``ServingError`` (the server's model/version/signature lookup).
    ``fast=False`` skips the numpy fast path (for tests and benchmarks).
    Raises ``ServingError`` with the reference's code and message.
    """
    if fast:
        decoded = try_fast_decode(body, inputs)
        if decoded is not None:
            return decoded
    doc = parse_request_json(body)
    signature_name = request_signature_name(doc)
    tensorinfo = resolve_inputs(inputs, signature_name)
    if not tensorinfo:
        raise _invalid(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise _invalid(
            f"JSON Value: {debug_string(doc)} Not formatted correctly expecting only one of 'inputs' or "
            "'instances' keys to exist "
        )
    if has_instances:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise _invalid(f"JSON Value: {debug_string(doc)} Expecting 'instances' to be an list/array")
        if not instances:
            raise _invalid(f"JSON Value: {debug_string(doc)} No values in 'instances' array")
        return DecodedPredict(_from_instances(instances, tensorinfo), True, signature_name)
    if has_inputs:
        return DecodedPredict(_from_inputs(doc["inputs"], tensorinfo), False, signature_name)
    raise _invalid("Missing 'inputs' or 'instances' key")


def is_b64_object(value: object) -> bool:
    """``IsValBase64Object``: ``{"b64": "<string>"}`` and nothing else."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _is_element_object(value: object) -> bool:
    return isinstance(value, dict) and not is_b64_object(value)


class _Accumulator:
    """Per-input values and the first element's size and shape (``AddInstanceItem``'s maps)."""

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        self.parts: list[np.ndarray] = []
        self.size: int | None = None
        self.shape: tuple[int, ...] = ()


def _from_instances(instances: list[Any], tensorinfo: Mapping[str, InputSpec]) -> dict[str, np.ndarray]:
    names = sorted(tensorinfo)
    if not isinstance(instances[0], dict) and len(tensorinfo) > 1:
        raise _invalid(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map"
        )
    named = _is_element_object(instances[0])
    accumulators: dict[str, _Accumulator] = {}
    for index, element in enumerate(instances):
        if named:
            if not _is_element_object(element):
                raise _invalid(f"Expecting object but got list at item {index} of input list")
            for key, item in element.items():
                try:
                    _add_instance_item(item, key, tensorinfo, accumulators)
                except ServingError as exc:
                    raise _invalid(
                        f"Failed to process element: {index} key: {key} of 'instances' list. "
                        f"Error: {exc.status_string()}"
                    ) from None
            if set(element) != set(names):
                raise _invalid(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{debug_string(element)} keys must be equal to: {','.join(names)}"
                )
        else:
            if _is_element_object(element):
                raise _invalid(f"Expecting value/list but got object at item {index} of input list")
            try:
                _add_instance_item(element, names[0], tensorinfo, accumulators)
            except ServingError as exc:
                raise _invalid(
                    f"Failed to process element: {index} of 'instances' list. Error: {exc.status_string()}"
                ) from None
    tensors = {}
    for name, acc in accumulators.items():
        values = np.concatenate(acc.parts) if len(acc.parts) > 1 else acc.parts[0]
        tensors[name] = values.reshape((len(instances), *acc.shape))
    return tensors


def _add_instance_item(
    item: object, name: str, tensorinfo: Mapping[str, InputSpec], accumulators: dict[str, _Accumulator]
) -> None:
    if name not in tensorinfo:
        raise _invalid(f"JSON object: does not have named input: {name}")
    acc = accumulators.get(name)
    if acc is None:
        acc = accumulators[name] = _Accumulator(tensorinfo[name])
    shape = _dense_shape(item, outer_dims=1)
    values = _fill_tensor(item, shape, acc.spec.dtype)
    size = values.size
    if acc.size is None:
        acc.size, acc.shape = size, shape
    elif acc.size != size:
        raise _invalid(f"Expecting tensor size: {acc.size} but got: {size}")
    elif acc.shape != shape:
        raise _invalid(f"Expecting shape {_shape_text(acc.shape)} but got: {_shape_text(shape)}")
    acc.parts.append(values.reshape(-1))


def _from_inputs(value: object, tensorinfo: Mapping[str, InputSpec]) -> dict[str, np.ndarray]:
    if not isinstance(value, dict) or is_b64_object(value):
        if len(tensorinfo) > 1:
            raise _invalid(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        name = next(iter(tensorinfo))
        shape = _dense_shape(value)
        return {name: _fill_tensor(value, shape, tensorinfo[name].dtype).reshape(shape)}
    tensors = {}
    for name in sorted(tensorinfo):
        if name not in value:
            raise _invalid(f"Missing named input: {name} in 'inputs' object.")
        shape = _dense_shape(value[name])
        tensors[name] = _fill_tensor(value[name], shape, tensorinfo[name].dtype).reshape(shape)
    return tensors


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


# numpy's limit on array dimensions (TensorFlow's is 254): deeper lists cannot become a tensor here.
MAX_TENSOR_RANK = 64


def _dense_shape(value: object, outer_dims: int = 0) -> tuple[int, ...]:
    """``GetDenseTensorShape``: list lengths along the first entry at every level.

    ``outer_dims``: dimensions the tensor has outside ``value`` (the batch of ``instances``).
    A rank past ``MAX_TENSOR_RANK`` is INVALID_ARGUMENT (TensorFlow's "Too many dimensions").
    """
    dims = []
    while isinstance(value, list):
        dims.append(len(value))
        if len(dims) + outer_dims > MAX_TENSOR_RANK:
            raise _invalid(
                f"Too many dimensions in tensor: JSON lists nested more than {MAX_TENSOR_RANK} deep "
                f"(the most this server supports)"
            )
        if not value:
            break
        value = value[0]
    return tuple(dims)


def _fill_tensor(value: object, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """``FillTensorProto`` for one value: flat numpy values, or the first error in DOM order."""
    fast = _fill_numeric_fast(value, shape, dtype)
    if fast is not None:
        return fast
    leaves: list[Any] = []
    rank = len(shape)
    # Iterative depth-first walk in document order (deep nesting must not hit the recursion limit).
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        val, level = stack.pop()
        if not isinstance(val, list):
            if level != rank:
                raise _invalid(
                    f"JSON Value: {debug_string(val)} found at incorrect level: {level + 1} "
                    f"in the JSON DOM. Expected at level: {rank}"
                )
            leaves.append(_convert_value(val, dtype))
            continue
        if level >= rank:
            raise _invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
        if len(val) != shape[level]:
            raise _invalid(
                f"Encountered list at unexpected size: {len(val)} at level: {level} expected size: {shape[level]}"
            )
        stack.extend((item, level + 1) for item in reversed(val))
    return _leaves_to_array(leaves, dtype)


def _fill_numeric_fast(value: object, shape: tuple[int, ...], dtype: str) -> np.ndarray | None:
    """Whole-array conversion when numpy proves the value is dense and type-clean, else None.

    ``np.array`` yields an int64 array of exactly ``shape`` only if every list has its first
    entry's length and every leaf is an int (or bool, which we rule out by type-checking).
    """
    if (dtype not in _INT32_TYPES and dtype not in ("int64", "float", "double")) or not shape:
        return None
    try:
        arr = np.array(value)
    except (ValueError, TypeError, OverflowError):
        return None
    if arr.shape != shape or arr.dtype.kind not in "if":
        return None
    if arr.dtype.kind == "i":
        if _contains_bool(value, len(shape)):
            return None
        if dtype in _INT32_TYPES:
            if arr.size and (arr.min() < -(2**31) or arr.max() > 2**31 - 1):
                return None
            return arr.astype(np.int64).astype(_NUMPY[dtype]).reshape(-1)
        return arr.astype(_NUMPY[dtype]).reshape(-1)
    if dtype in ("float", "double"):
        if _contains_bool(value, len(shape)):
            return None
        return arr.astype(_NUMPY[dtype]).reshape(-1)
    return None


def _contains_bool(value: object, rank: int) -> bool:
    """Whether any leaf is a bool (numpy would silently turn True into 1)."""
    rows: list[Any] = [value]
    for _ in range(rank - 1):
        rows = [item for row in rows for item in row]
    return any(type(x) is bool for row in rows for x in row)


def _leaves_to_array(leaves: list[Any], dtype: str) -> np.ndarray:
    if dtype == "string":
        out = np.empty(len(leaves), dtype=object)
        out[:] = leaves
        return out
    if dtype in _INT32_TYPES:
        return np.array(leaves, dtype=np.int64).astype(_NUMPY[dtype])
    return np.array(leaves, dtype=_NUMPY[dtype])


def _type_error(value: object, dtype: str) -> ServingError:
    return _invalid(f"JSON Value: {debug_string(value)} Type: {json_type_name(value)} is not of expected type: {dtype}")


def _convert_value(value: object, dtype: str) -> object:
    """``AddValueToTensor`` (plus the object / b64 case of ``FillTensorProto``)."""
    if isinstance(value, dict):
        if dtype != "string":
            raise _type_error(value, dtype)
        if not is_b64_object(value):
            raise _invalid(f"JSON Value: {debug_string(value)} not formatted correctly for base64 data")
        return b64decode(value["b64"])
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if dtype in _INT32_TYPES:
        if not (is_int and -(2**31) <= value < 2**31):  # type: ignore[operator]
            raise _type_error(value, dtype)
        return value
    if dtype in ("float", "double"):
        if not (is_int or isinstance(value, float)):
            raise _type_error(value, dtype)
        return value
    if dtype == "string":
        if not isinstance(value, str):
            raise _type_error(value, dtype)
        return value.encode("utf-8", "surrogateescape")
    if dtype == "int64":
        if not (is_int and -(2**63) <= value < 2**63):  # type: ignore[operator]
            raise _type_error(value, dtype)
        return value
    if dtype == "bool":
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        return value
    if dtype == "uint32":
        if not (is_int and 0 <= value < 2**32):  # type: ignore[operator]
            raise _type_error(value, dtype)
        return value
    if dtype == "uint64":
        if not (is_int and 0 <= value < 2**64):  # type: ignore[operator]
            raise _type_error(value, dtype)
        return value
    raise ServingError("UNIMPLEMENTED", f"Conversion of JSON Value: {debug_string(value)} to type: {dtype}")


def b64decode(text: str) -> bytes:
    """absl ``Base64Unescape``: standard alphabet, padding optional, whitespace not allowed."""
    data = text.encode("utf-8", "surrogateescape")
    stripped = data.rstrip(b"=")
    if len(data) - len(stripped) > 2 or len(stripped) % 4 == 1:
        raise _invalid("Unable to base64 decode")
    try:
        return base64.b64decode(stripped + b"=" * (-len(stripped) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("Unable to base64 decode") from None
