"""Filling any signature: shapes, value sources and ranges, replayed files, and the one-line refusals."""

from __future__ import annotations

import argparse

import numpy as np
import orjson
import pytest

from bench.errors import ConfigError
from bench.payloads.encodings import get_encoding
from bench.payloads.images import SyntheticImages
from bench.payloads.input_plan import (
    InputBatches,
    InputOptions,
    InputPlan,
    parse_input_range,
    parse_input_shape,
    plan_inputs,
)
from bench.payloads.specs import InputSpec
from bench.payloads.tensors import ImageBytes


def arrays(batch: dict[str, np.ndarray | ImageBytes]) -> dict[str, np.ndarray]:
    """The batch's numeric arrays (no ImageBytes here)."""
    out = {}
    for name, value in batch.items():
        assert isinstance(value, np.ndarray)
        out[name] = value
    return out


PIXELS = InputSpec("pixels", "float", (None, 24, 24, 3))
THRESHOLD = InputSpec("threshold", "float", (None,))


def test_a_float_image_input_gets_the_synthetic_images_scaled_to_0_1() -> None:
    plan = plan_inputs([PIXELS, THRESHOLD], InputOptions())
    batch = arrays(InputBatches(plan).batch(4, index=2))
    images = SyntheticImages(24, 24).batch(4, index=2)
    assert batch["pixels"].dtype == np.float32
    assert np.allclose(batch["pixels"] * 255.0, images, atol=1e-3)
    assert batch["threshold"].shape == (4,)
    assert 0.0 <= batch["threshold"].min() <= batch["threshold"].max() < 1.0
    # deterministic: the same index gives the same batch
    assert np.array_equal(arrays(InputBatches(plan).batch(4, index=2))["threshold"], batch["threshold"])
    assert plan.describe() == (
        "serving_default: pixels float32 [-1,24,24,3] image 0:1; threshold float32 [-1] values 0:1"
    )


@pytest.mark.parametrize(("text", "low", "high"), [("-1:1", -1.0, 1.0), ("0:255", 0.0, 255.0)])
def test_pixel_range_converts_the_images(text: str, low: float, high: float) -> None:
    batch = arrays(InputBatches(plan_inputs([PIXELS], InputOptions(pixel_range=text))).batch(2))
    images = SyntheticImages(24, 24).batch(2).astype(np.float64)
    assert np.allclose(batch["pixels"], images / 255.0 * (high - low) + low, atol=1e-4)


def test_integers_bools_and_ranges() -> None:
    specs = [
        InputSpec("ids", "int64", (None, 5)),
        InputSpec("small", "int8", (None, 3)),
        InputSpec("mask", "bool", (None, 5)),
        InputSpec("scale", "double", (None,)),
    ]
    options = InputOptions(input_ranges=(("ids", 10.0, 20.0),))
    batch = arrays(InputBatches(plan_inputs(specs, options)).batch(64))
    assert batch["ids"].dtype == np.int64
    assert batch["ids"].min() >= 10
    assert batch["ids"].max() <= 20
    assert batch["small"].dtype == np.int8
    assert batch["small"].min() >= 0
    assert batch["small"].max() <= 127
    assert batch["mask"].dtype == np.bool_
    assert 0 < batch["mask"].sum() < batch["mask"].size
    assert batch["scale"].dtype == np.float64


def test_unknown_dims_need_input_shape_in_one_line() -> None:
    spec = InputSpec("input_1", "float", (None, None, None, 3))
    with pytest.raises(ConfigError) as info:
        plan_inputs([spec], InputOptions())
    assert str(info.value) == (
        "input 'input_1' has shape [-1,-1,-1,3] with unknown dims beyond the batch: "
        "give them with --input-shape input_1=96x96x3"
    )
    plan = plan_inputs([spec], InputOptions(input_shapes=(("input_1", (32, 40, 3)),)))
    assert arrays(InputBatches(plan).batch(2))["input_1"].shape == (2, 32, 40, 3)
    with pytest.raises(ConfigError, match=r"--input-shape input_1=32x40x4 does not fit the signature's"):
        plan_inputs([spec], InputOptions(input_shapes=(("input_1", (32, 40, 4)),)))


def test_string_inputs_take_image_bytes_or_say_which_flag() -> None:
    plan = plan_inputs([InputSpec("image_bytes", "string", (None,))], InputOptions())
    value = InputBatches(plan).batch(3)["image_bytes"]
    assert isinstance(value, ImageBytes)
    assert value.images.shape == (3, 128, 128, 3)
    with pytest.raises(ConfigError, match=r"string input 'text' .* --bytes-input text"):
        plan_inputs([InputSpec("text", "string", (None,))], InputOptions())
    assert plan_inputs([InputSpec("text", "string", (None,))], InputOptions(bytes_inputs=("text",)))


def test_float16_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError, match="float16, which tensorflow/serving's REST API cannot parse"):
        plan_inputs([InputSpec("h", "half", (None, 3))], InputOptions())


@pytest.mark.parametrize("layout", ["rows", "columns", "npz"])
def test_inputs_file_rows_are_repeated_and_sliced(tmp_path, layout: str) -> None:
    pixels = np.arange(3 * 24 * 24 * 3, dtype=np.float32).reshape(3, 24, 24, 3) / 1000.0
    threshold = np.array([0.25, 0.5, 0.75], dtype=np.float32)
    if layout == "npz":
        path = tmp_path / "inputs.npz"
        np.savez(path, pixels=pixels, threshold=threshold)
    else:
        path = tmp_path / "body.json"
        doc: dict[str, object]
        if layout == "rows":
            doc = {"instances": [{"pixels": p, "threshold": t} for p, t in zip(pixels, threshold, strict=True)]}
        else:
            doc = {"inputs": {"pixels": pixels, "threshold": threshold}}
        path.write_bytes(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY))
    plan = plan_inputs([PIXELS, THRESHOLD], InputOptions(inputs_file=str(path)))
    assert [i.fill for i in plan.inputs] == ["file", "file"]
    batches = InputBatches(InputPlan.from_dict(plan.to_dict()))
    assert arrays(batches.batch(5))["threshold"].tolist() == [0.25, 0.5, 0.75, 0.25, 0.5]
    assert np.array_equal(arrays(batches.batch(2, index=1))["pixels"], pixels[[2, 0]])
    body = get_encoding("row-orjson").encode(batches.batch(1))
    assert orjson.loads(body)["instances"][0]["threshold"] == 0.25


def test_inputs_file_that_does_not_fit_is_one_line(tmp_path) -> None:
    path = tmp_path / "body.json"
    path.write_text('{"instances": [{"pixels": [[[0.0, 0.0, 0.0]]]}]}')
    with pytest.raises(ConfigError, match=r"--inputs-file .* lacks threshold \(signature inputs: pixels, threshold\)"):
        plan_inputs([PIXELS, THRESHOLD], InputOptions(inputs_file=str(path)))
    with pytest.raises(ConfigError, match=r"rows of shape \[1, 1, 3\], the signature says \[24, 24, 3\]"):
        plan_inputs([PIXELS], InputOptions(inputs_file=str(path)))


def test_flag_parsers() -> None:
    assert parse_input_shape("pixels=96x96x3") == ("pixels", (96, 96, 3))
    assert parse_input_range("t=-1:2.5") == ("t", -1.0, 2.5)
    for bad in ("pixels", "pixels=96xx3", "=3", "p=0x3"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_input_shape(bad)
    for bad in ("t=2:1", "t=1", "t"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_input_range(bad)
