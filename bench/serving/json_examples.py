"""``:classify`` / ``:regress`` bodies: JSON examples into serialized ``tf.Example`` protos.

A port of ``FillClassifyRegressRequestFromJson`` (``tensorflow_serving/util/json_tensor.cc``)::

    {"signature_name": "classify_x_to_y", "context": {"c": 1}, "examples": [{"x": 2.0}, {"x": [1.5, 2.5]}]}

Checks run in upstream's order, all before the model is looked up: JSON parse, ``signature_name``
a string, ``context`` an example, ``examples`` present, a list, not empty, each an example. A
feature's values (one value or a list) decide its kind: strings and ``{"b64": ...}`` are
``bytes_list``, numbers with a fraction or exponent ``float_list``, integers and booleans
``int64_list``; a feature mixing kinds, ``null``, nested lists and integers beyond int64 are
refused with upstream's texts. TensorFlow-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.serving.example_proto import ExampleInput, Feature, encode_example
from bench.serving.json_tensor import b64decode, is_b64_object, parse_request_json, request_signature_name
from bench.serving.rapidjson import debug_string, json_type_name
from bench.serving.status import invalid_argument

__all__ = ["ExampleRequest", "parse_classify_regress_body"]

_INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class ExampleRequest:
    """A decoded classify/regress body: the signature it names ("" = default) and its examples."""

    signature_name: str
    input: ExampleInput


def parse_classify_regress_body(body: bytes | bytearray) -> ExampleRequest:
    """``FillClassifyRegressRequestFromJson``: the request, or the reference's format error."""
    doc = parse_request_json(body)
    signature_name = request_signature_name(doc)
    context = _example(doc["context"]) if "context" in doc else None
    if "examples" not in doc:
        raise invalid_argument(
            f"JSON Value: {debug_string(doc)} When method is classify, key 'examples' is expected and was not found"
        )
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise invalid_argument(f"JSON Value: {debug_string(doc)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise invalid_argument(f"JSON Value: {debug_string(doc)} 'examples' value is an empty array")
    return ExampleRequest(signature_name, ExampleInput(tuple(_example(e) for e in examples), context))


def _example(value: object) -> bytes:
    """``MakeExampleFromJsonObject``: one JSON object as a serialized ``tf.Example``."""
    if not isinstance(value, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {json_type_name(value)}")
    features: dict[str, Feature] = {}
    for name, content in value.items():
        kind: str | None = None
        values: list[Any] = []
        for item in content if isinstance(content, list) else [content]:
            kind = _add_value(name, item, kind, values)
        features[name] = (kind, values)
    return encode_example(features)


def _add_value(name: str, item: object, kind: str | None, values: list[Any]) -> str:
    """``AddValueToFeature``: append ``item`` to a feature of ``kind`` (None: not set yet)."""
    if item is None or isinstance(item, list) or (isinstance(item, dict) and not is_b64_object(item)):
        raise invalid_argument(f"Feature: {name} has element with unexpected JSON type: {json_type_name(item)}")
    value: object
    if isinstance(item, bool):
        needed, value = "int64", int(item)
    elif isinstance(item, dict):
        needed, value = "bytes", None
    elif isinstance(item, str):
        needed, value = "bytes", item.encode("utf-8", "surrogateescape")
    elif isinstance(item, float):
        needed, value = "float", item
    else:
        needed, value = "int64", item
    if kind is not None and kind != needed:
        raise invalid_argument(f"Unexpected element type in feature: {name} expecting type: {kind}")
    if isinstance(item, dict):
        value = b64decode(item["b64"])
    elif needed == "int64" and value > _INT64_MAX:  # type: ignore[operator]
        raise invalid_argument(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
    values.append(value)
    return needed
