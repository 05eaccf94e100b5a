"""How to fill any signature: one plan per signature, and the batches it makes.

``plan_inputs(specs, options)`` turns a signature's inputs (read from the target's metadata)
and the user's flags into an :class:`InputPlan`, or one ``ConfigError`` line naming the input
and the flag that would resolve it. ``InputBatches(plan).batch(size, index)`` then draws the
``{input: array}`` batch number ``index``, the same on every call::

    plan = plan_inputs([InputSpec("pixels", "float", (None, 96, 96, 3))], InputOptions())
    InputBatches(plan).batch(16)      # {"pixels": float32 [16, 96, 96, 3] in [0, 1)}

Per input, in order:

* ``--inputs-file``: every input replays the file's rows (repeated or sliced to the batch);
* string inputs named ``*_bytes`` or given by ``--bytes-input``: images (``--images DIR`` or the
  synthetic ones, size from ``--input-shape NAME=HxWxC``, default 128x128x3) as PNG/JPEG bytes;
* image-like inputs ``[batch, H, W, C]`` with C in 1, 3, 4: the same images, scaled to
  ``--pixel-range`` (floats default 0:1, integers 0:255);
* anything else: seeded values, floats in [0, 1), integers in [0, 255] clipped to the dtype,
  random bools, or ``--input-range NAME=LO:HI``.

Dimensions other than the batch that the signature leaves unknown come from ``--input-shape``.
The plan is plain data (``to_dict``/``from_dict``): the sweep writes it for each Locust process.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import ConfigError
from bench.payloads.images import image_source
from bench.payloads.inputs_file import load_inputs_file
from bench.payloads.specs import InputSpec
from bench.payloads.tensors import REST_DTYPES, ImageBytes, numpy_name, rest_refusal

PIXEL_RANGES: dict[str, tuple[float, float]] = {"0:1": (0.0, 1.0), "0:255": (0.0, 255.0), "-1:1": (-1.0, 1.0)}
IMAGE_CHANNELS = (1, 3, 4)
DEFAULT_BYTES_IMAGE = (128, 128, 3)
SEED = 0


@dataclass(frozen=True)
class InputOptions:
    """The user's say in how inputs are filled (the flags of the same names)."""

    input_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    input_ranges: tuple[tuple[str, float, float], ...] = ()
    bytes_inputs: tuple[str, ...] = ()
    pixel_range: str | None = None
    inputs_file: str | None = None
    images: str | None = None

    def shape_of(self, name: str) -> tuple[int, ...] | None:
        return next((shape for key, shape in self.input_shapes if key == name), None)

    def range_of(self, name: str) -> tuple[float, float] | None:
        return next(((lo, hi) for key, lo, hi in self.input_ranges if key == name), None)


@dataclass(frozen=True)
class PlannedInput:
    """One input: TF dtype, per-example shape (batch dimension left out), how it is filled, value range."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    fill: str  # "image", "image_bytes", "values" or "file"
    low: float | None = None
    high: float | None = None

    def describe(self) -> str:
        """e.g. ``pixels float32 [-1,96,96,3] image 0:1``."""
        dims = ",".join(str(d) for d in ("-1", *self.shape))
        text = f"{self.name} {numpy_name(self.dtype)} [{dims}] {self.fill.replace('_', '-')}"
        if self.low is not None and self.high is not None:
            text += f" {self.low:g}:{self.high:g}"
        return text


@dataclass(frozen=True)
class InputPlan:
    """How one signature is filled (see the module docstring)."""

    signature_name: str
    inputs: tuple[PlannedInput, ...]
    images: str | None = None
    inputs_file: str | None = None
    fixed_batch: int | None = None  # the signature's batch dimension, when it is not -1

    @property
    def specs(self) -> list[InputSpec]:
        return [InputSpec(i.name, i.dtype, (None, *i.shape)) for i in self.inputs]

    def describe(self) -> str:
        """One line: the signature and each input, e.g. for the report header."""
        source = f" from {self.inputs_file}" if self.inputs_file else ""
        inputs = "; ".join(i.describe() for i in self.inputs)
        return f"{self.signature_name or 'serving_default'}: {inputs}{source}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputPlan:
        inputs = tuple(
            PlannedInput(**{**raw, "shape": tuple(int(d) for d in raw["shape"])}) for raw in data.get("inputs", ())
        )
        return cls(
            signature_name=str(data.get("signature_name", "")),
            inputs=inputs,
            images=data.get("images"),
            inputs_file=data.get("inputs_file"),
            fixed_batch=data.get("fixed_batch"),
        )


def _shown(shape: Sequence[int | None]) -> str:
    return "[" + ",".join("-1" if d is None else str(d) for d in shape) + "]"


def _resolve_shape(spec: InputSpec, options: InputOptions) -> tuple[int, ...]:
    given = options.shape_of(spec.name)
    hint = f"--input-shape {spec.name}=" + "x".join(str(d or 96) for d in spec.shape[1:] or (96, 96, 3))
    if not spec.shape:
        if given is None:
            raise ConfigError(
                f"input '{spec.name}' has an unknown shape: give it with {hint} (the dims after the batch)"
            )
        return given
    declared = spec.shape[1:]
    if given is None:
        if any(d is None for d in declared):
            raise ConfigError(
                f"input '{spec.name}' has shape {_shown(spec.shape)} with unknown dims beyond the batch: "
                f"give them with {hint}"
            )
        return tuple(int(d) for d in declared if d is not None)
    if len(given) != len(declared) or any(d is not None and d != g for g, d in zip(given, declared, strict=True)):
        raise ConfigError(
            f"--input-shape {spec.name}={'x'.join(map(str, given))} does not fit the signature's {_shown(spec.shape)}"
        )
    return given


def _is_image(dtype: str, shape: tuple[int, ...]) -> bool:
    return dtype not in ("bool", "string") and len(shape) == 3 and shape[2] in IMAGE_CHANNELS


def _integer_range(dtype: str) -> tuple[float, float]:
    info = np.iinfo(REST_DTYPES[dtype])
    return float(max(0, info.min)), float(min(255, info.max))


def _plan_one(spec: InputSpec, options: InputOptions) -> PlannedInput:
    if spec.dtype == "string":
        if not (spec.name.endswith("_bytes") or spec.name in options.bytes_inputs):
            raise ConfigError(
                f"string input '{spec.name}' is not known to take image bytes: pass --bytes-input {spec.name} "
                "to send PNG/JPEG images, or replay your own values with --inputs-file"
            )
        shape = options.shape_of(spec.name) or DEFAULT_BYTES_IMAGE
        if len(shape) != 3 or shape[2] not in (1, 3):
            raise ConfigError(
                f"--input-shape {spec.name}: image bytes need HxWx1 or HxWx3, got {'x'.join(map(str, shape))}"
            )
        return PlannedInput(spec.name, spec.dtype, shape, "image_bytes")
    shape = _resolve_shape(spec, options)
    given = options.range_of(spec.name)
    if _is_image(spec.dtype, shape) and given is None:
        floating = spec.dtype in ("float", "double")
        text = options.pixel_range or ("0:1" if floating else "0:255")
        low, high = PIXEL_RANGES[text]
        if not floating and low < 0:
            low, high = _integer_range(spec.dtype)[0], 255.0
        return PlannedInput(spec.name, spec.dtype, shape, "image", low, high)
    if spec.dtype == "bool":
        return PlannedInput(spec.name, spec.dtype, shape, "values")
    if given is not None:
        low, high = given
    elif spec.dtype in ("float", "double"):
        low, high = 0.0, 1.0
    else:
        low, high = _integer_range(spec.dtype)
    return PlannedInput(spec.name, spec.dtype, shape, "values", low, high)


def plan_inputs(specs: Sequence[InputSpec], options: InputOptions, signature_name: str = "") -> InputPlan:
    """The plan for a signature with inputs ``specs``; ``ConfigError`` (one line) when one cannot be filled."""
    if not specs:
        raise ConfigError(f"signature '{signature_name or 'serving_default'}' has no inputs to fill")
    for spec in specs:
        reason = rest_refusal(spec.name, spec.dtype)
        if reason:
            raise ConfigError(reason)
    unknown = [key for key, _ in options.input_shapes if key not in {s.name for s in specs}]
    unknown += [key for key, _, _ in options.input_ranges if key not in {s.name for s in specs}]
    if unknown:
        raise ConfigError(
            f"--input-shape/--input-range name input '{unknown[0]}', which the signature lacks "
            f"(inputs: {', '.join(s.name for s in specs)})"
        )
    fixed = {s.shape[0] for s in specs if s.shape and s.shape[0] is not None}
    fixed_batch = int(next(iter(fixed))) if len(fixed) == 1 else None
    if options.inputs_file:
        rows = load_inputs_file(options.inputs_file, specs)
        inputs = tuple(PlannedInput(s.name, s.dtype, tuple(rows[s.name].shape[1:]), "file") for s in specs)
    else:
        inputs = tuple(_plan_one(spec, options) for spec in specs)
    return InputPlan(signature_name, inputs, options.images, options.inputs_file, fixed_batch)


class InputBatches:
    """The batches of one plan: ``batch(size, index)`` is deterministic in (plan, size, index)."""

    def __init__(self, plan: InputPlan) -> None:
        self.plan = plan
        self._rows = load_inputs_file(plan.inputs_file, plan.specs) if plan.inputs_file else None
        self._images: dict[tuple[int, int], Any] = {}
        images_dir = Path(plan.images) if plan.images else None
        for planned in plan.inputs:
            if planned.fill in ("image", "image_bytes"):
                height, width = planned.shape[0], planned.shape[1]
                if (height, width) not in self._images:
                    self._images[(height, width)] = image_source(images_dir, height, width)

    def _images_for(self, planned: PlannedInput, size: int, index: int) -> np.ndarray:
        height, width, channels = planned.shape
        rgb: np.ndarray = self._images[(height, width)].batch(size, index)
        if channels == 1:
            return np.round(rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))[..., None].astype(
                np.uint8
            )
        if channels == 4:
            alpha = np.full((*rgb.shape[:3], 1), 255, dtype=np.uint8)
            return np.concatenate([rgb, alpha], axis=-1)
        return rgb

    def _one(self, position: int, planned: PlannedInput, size: int, index: int) -> np.ndarray | ImageBytes:
        dtype = REST_DTYPES[planned.dtype]
        if planned.fill == "file":
            assert self._rows is not None
            rows = self._rows[planned.name]
            picks = (np.arange(size) + index * size) % len(rows)
            return rows[picks]
        if planned.fill == "image_bytes":
            return ImageBytes(self._images_for(planned, size, index))
        if planned.fill == "image":
            images = self._images_for(planned, size, index)
            if dtype == np.uint8:
                return images
            assert planned.low is not None
            assert planned.high is not None
            if np.issubdtype(dtype, np.integer):
                return images.astype(dtype)
            scale = (planned.high - planned.low) / 255.0
            return (images.astype(np.float64) * scale + planned.low).astype(dtype)
        rng = np.random.default_rng((SEED, position, size, index))
        shape = (size, *planned.shape)
        if planned.dtype == "bool":
            return rng.random(shape) < 0.5
        assert planned.low is not None
        assert planned.high is not None
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            low, high = max(planned.low, info.min), min(planned.high, info.max)
            return rng.integers(int(low), int(high), size=shape, endpoint=True).astype(dtype)
        return rng.uniform(planned.low, planned.high, size=shape).astype(dtype)

    def batch(self, size: int, index: int = 0) -> dict[str, np.ndarray | ImageBytes]:
        """Batch number ``index`` of ``size`` examples, one array (or ImageBytes) per input."""
        if size <= 0 or index < 0:
            raise ConfigError(f"batch size must be positive and index non-negative, got {size}, {index}")
        return {planned.name: self._one(i, planned, size, index) for i, planned in enumerate(self.plan.inputs)}


# -- flag parsers (argparse ``type=``) ---------------------------------------------------------


def _flag_error(text: str) -> Exception:
    return argparse.ArgumentTypeError(text)


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``NAME=96x96x3`` -> ``("NAME", (96, 96, 3))`` (the dims after the batch; ``NAME=`` for a scalar)."""
    name, sep, dims = text.partition("=")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x")) if dims.strip() else ()
    except ValueError:
        shape = (0,)
    if not sep or not name.strip() or any(d <= 0 for d in shape):
        raise _flag_error(f"'{text}' is not NAME=DIMS, e.g. pixels=96x96x3 (positive dims after the batch)")
    return name.strip(), shape


def parse_input_range(text: str) -> tuple[str, float, float]:
    """``NAME=LO:HI`` -> ``("NAME", LO, HI)`` with LO <= HI."""
    name, sep, bounds = text.partition("=")
    low_text, colon, high_text = bounds.partition(":")
    try:
        low, high = float(low_text), float(high_text)
    except ValueError:
        low, high = 1.0, 0.0
    if not sep or not colon or not name.strip() or not low <= high:
        raise _flag_error(f"'{text}' is not NAME=LO:HI, e.g. threshold=0:1 (LO <= HI)")
    return name.strip(), low, high
