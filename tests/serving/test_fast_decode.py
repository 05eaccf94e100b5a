"""The numpy fast decode path on every body form it takes (row, columnar, named columnar, named
instances; whitespace anywhere JSON allows it) agrees with the general path: same tensors for
valid bodies, same status and message for invalid ones, whichever path answers."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.payloads.specs import REFERENCE_SIGNATURES, InputSpec
from bench.serving.fast_decode import try_fast_decode
from tests.helpers.decode_helpers import dense, outcome

DIGIT_NAME = {"x2": InputSpec("x2", "uint8", (None, 2))}  # digits in the key must not read as values
TWO_INPUTS = {"a": InputSpec("a", "uint8", (None,)), "b": InputSpec("b", "uint8", (None,))}


def wrap(images: np.ndarray, form: str, name: str = "examples") -> dict:
    if form == "row":
        return {"instances": images.tolist()}
    if form == "columnar":
        return {"inputs": images.tolist()}
    if form == "named-columnar":
        return {"inputs": {name: images.tolist()}}
    return {"instances": [{name: image} for image in images.tolist()]}


FORMS = ["row", "columnar", "named-columnar", "named-instances"]

HAND_PICKED = [
    b'{"inputs": {"examples": [[[[1, 2, 3]]]]}}',
    b'{"inputs":{"examples":[[[[1,2,3]]]]},"signature_name":"serving_default"}',
    b'{"signature_name": "serving_default", "inputs" : { "examples" : [[[[0, 255, 256]]]] } }',
    b'{"inputs": {"examples": [[[[1, 2, 3]]]], "extra": 1}}',
    b'{"inputs": {"other": [[[[1, 2, 3]]]]}}',
    b'{"inputs": {"examples": [[[[1, 2, 3]]]]}',
    b'{"inputs": {"examples": [[[[1, 2, 3]]]]}}}',
    b'{"inputs": {"examples": [[[[1, 2, 3]]]], "signature_name": "serving_default"}}',
    b'{"inputs": {"ex\\u0061mples": [[[[1, 2, 3]]]]}}',
    b'{"inputs": {"examples": [[[[1, 2, 3]]], [[[4, 5]]]]}}',
    b'{"inputs": {"examples": [[[[1, 2, -3]]]]}}',
    b'{"instances": {"examples": [[[[1, 2, 3]]]]}}',
    b'{"instances": [{"examples": [[[1, 2, 3]]]}]}',
    b'{"instances": [{"examples": [[[1, 2, 3]]]}, {"examples": [[[4, 5, 6]]]}]}',
    b'{"instances": [ { "examples" : [ [ [ 1 , 2 , 3 ] ] ] } , {"examples":[[[4,5,6]]]} ] }',
    b'{"instances": [{"examples": [[[1, 2, 3]]]}, {"examples": [[[4, 5]]]}]}',
    b'{"instances": [{"examples": [[[1, 2, 3]]]}, {"examples": [[[4, 5, 6], [7, 8, 9]]]}]}',
    b'{"instances": [{"examples": [[[1, 2, 3]]]}, [[[4, 5, 6]]]]}',
    b'{"instances": [[[[1, 2, 3]]], {"examples": [[[4, 5, 6]]]}]}',
    b'{"instances": [{"examples": [[[1, 2, 3]]]}, {"other": [[[4, 5, 6]]]}]}',
    b'{"instances": [{"examples": [[[1, 2, 3]]], "other": 1}]}',
    b'{"instances": [{"examples": [[[1, 2, 3]]], "examples": [[[4, 5, 6]]]}]}',
    b'{"instances": [{"examples": [[[1, 2, 3]]]},]}',
    b'{"instances": [{"examples": [[[1, 2, 3]]]} {"examples": [[[4, 5, 6]]]}]}',
    b'{"instances": [{"examples": [[[1, 2, 3]]]}, {}]}',
    b'{"instances": [{"examples": [[[1, 2, 03]]]}]}',
    b'{"instances": [{"examples": [[[1, 2 3]]]}]}',
    b'{"instances": [{"examples": [[[1, 2, 3]]]}, {"examples": [[[4, 5, 6]]]}}',
    b'{"instances": [{"examples": [[[1, 2, {"b64": "AA=="}]]]}]}',
    b'{"instances": [{"examples": 7}]}',
    b'{"instances": [{"examples": []}]}',
    b'{"instances": [{"examples" [[[1, 2, 3]]]}]}',
    b'{"signature_name": "serving_bytes", "instances": [{"examples": [[[1, 2, 3]]]}]}',
    b'{"instances": [{"examples": [[[1, 2, 3]]]}], "signature_name": "nope"}',
    b'{"instances": [[[[  1,  2,255]]], [[[ 10,  0,  7]]]]}',
    b'{"instances": [[[[  1,  2, 1 0]]]]}',
    b'{"instances": [[[[  1,  2,  3 ]  ]  ]  ]  }',
    b'{"instances":\n [\n  [[[1,\n 2,\n 3]]]\n ]\n}\n',
    b'{"instances": [[[[1, 2, 3]]]]}  \n\t',
    b'{"instances": [[[[1, 2, 3]]] ,[[[4, 5, 6]]]]}',
    b'{"instances": [[[[1, 2, 3]] [[4, 5, 6]]]]}',
    b'{"instances": [[[[1, 2, 3] ] ], [[[4, 5, 6 ]]]]}',
    b'{"instances": [[[[1, 2, 3]]], [[[4, 5, 6]]] 7]}',
    b'{"instances": [[[[1, 2, 3]]], 7 [[[4, 5, 6]]]]}',
    b'{"instances": [[[[1, 2, 3\xa0]]]]}',
    b'{"inputs": [1, 2, 3]}',
    b'{"inputs": [1, 2, 3 ]}',
    # Whitespace that moves a number into the neighbouring slot keeps the separators and the
    # count of numbers: only the slot check can tell.
    b'{"instances": [[[[1 2, ,3]]]]}',
    b'{"instances": [[[[1, ,2 3]]]]}',
    b'{"inputs": [[ ,1]2,[3,4]]}',
    b'{"inputs": [[1,2] ,[3, 4]5]}',
    b'{"instances": [{"examples": [[[1, 2, 3]]]}, {"examples": [[[4 5, ,6]]]}]}',
    b'{"instances": [{"examples": [[[1, 2, 3]]], [[[4, 5, 6]]]}]}',
]


@pytest.mark.parametrize("body", HAND_PICKED)
def test_fast_and_general_paths_agree_on_hand_picked_bodies(body: bytes) -> None:
    assert outcome(body, fast=True) == outcome(body, fast=False)


@pytest.mark.parametrize(
    ("body", "inputs"),
    [
        (b'{"inputs": {"x2": [[1, 2], [3, 4]]}}', DIGIT_NAME),
        (b'{"instances": [{"x2": [1, 2]}, {"x2": [3, 4]}]}', DIGIT_NAME),
        (b'{"instances": [{"x2": [1, 2]}, {"x3": [3, 4]}]}', DIGIT_NAME),
        (b'{"instances": [{"x2": [1, 2]}, {"x2": [3, 4, 5]}]}', DIGIT_NAME),
        (b'{"instances": [{"a": [1]}, {"a": [2]}]}', TWO_INPUTS),
        (b'{"inputs": {"a": [1, 2]}}', TWO_INPUTS),
    ],
)
def test_fast_and_general_paths_agree_with_other_signatures(body: bytes, inputs) -> None:
    assert outcome(body, fast=True, inputs=inputs) == outcome(body, fast=False, inputs=inputs)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("style", ["orjson", "json", "indent", "padded"])
def test_fast_path_really_runs_on_every_form(form: str, style: str) -> None:
    images = dense((3, 5, 4, 3), 1)
    doc = wrap(images, form)
    if style == "orjson":
        body = orjson.dumps(doc)
    elif style == "json":
        body = json.dumps(doc).encode()
    elif style == "indent":
        body = json.dumps({"signature_name": "serving_default", **doc}, indent=2).encode()
    else:  # bench.payloads.fast_json's layout: values right-aligned with spaces to 3 characters
        body = json.dumps(doc, separators=(",", ":")).encode()
        body = b",".join(part.rjust(3) if part[:1].isdigit() else part for part in body.split(b","))
    fast = try_fast_decode(body, REFERENCE_SIGNATURES)
    assert fast is not None, body[:120]
    assert np.array_equal(fast.tensors["examples"], (images & 0xFF).astype(np.uint8))
    assert fast.row_format == form.endswith(("row", "instances"))
    assert outcome(body, fast=True) == outcome(body, fast=False)


def _render(value: object, style: int) -> bytes:
    if style == 0:
        return orjson.dumps(value)
    if style == 1:
        return json.dumps(value).encode()
    if style == 2:
        return json.dumps(value, indent=1, separators=(" ,", " : ")).encode()
    return json.dumps(value, indent="\t", separators=(",\r\n", ":\t")).encode()


MUTATIONS = ["", "-", "0", "1.5", "x", " ", ",", "[", "]", "{", "}", '"', ":", "true", "01", "\n", "[]", "{}", "7777"]
MUTATIONS += ['{"examples":', '"examples"', '{"b64": "AA=="}', "\t9", "9 "]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple),
    seed=st.integers(0, 10_000),
    form=st.sampled_from(FORMS),
    name=st.sampled_from(["examples", "examples", "other"]),
    style=st.integers(0, 3),
    signature=st.sampled_from([None, "serving_default", "serving_bytes"]),
    mutate=st.booleans(),
    position=st.floats(0, 1),
    mutation=st.sampled_from(MUTATIONS),
    cut=st.integers(0, 3),
)
def test_fast_and_general_paths_agree_on_generated_bodies(
    shape, seed, form, name, style, signature, mutate, position, mutation, cut
) -> None:
    doc: dict = wrap(dense(shape, seed), form, name)
    if signature is not None:
        doc = {"signature_name": signature, **doc} if seed % 2 else {**doc, "signature_name": signature}
    body = _render(doc, style)
    if mutate:
        at = int(position * len(body))
        body = body[:at] + mutation.encode() + body[at + cut :]
    assert outcome(body, fast=True) == outcome(body, fast=False)
