"""Small models with other signatures, so tests and demos cover real shapes without a download.

``tfsbench export --input-dtype float32 --image-size 224 --input-name input_1`` writes a model
whose ``serving_default`` takes ``input_1`` float32 [-1,224,224,3] (pixels in [0, 1]);
``--variant two-input`` adds a per-example float32 ``threshold`` [-1] (an output says whether the
top probability reaches it); ``--variant bytes-only`` takes only encoded PNG/JPEG ``image_bytes``
string [-1]. ``--image-size 0`` leaves height and width unknown ([-1,-1,-1,3]). The network is one
strided 3x3 convolution and a dense layer with seeded weights: cheap, deterministic, any size.

The reference classifier (``export.saved_model``, no variant flags) is untouched by this module.
TensorFlow is imported lazily by :func:`export_variant`.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.argtypes import non_negative_int
from bench.errors import ConfigError
from bench.tensorflow_import import import_tensorflow
from export.saved_model import ExportResult, describe_signatures, write_version

VARIANTS = ("reference", "two-input", "bytes-only")
INPUT_DTYPES = ("uint8", "float32")
NUM_CLASSES = 10
FILTERS = 8
BYTES_IMAGE_SIZE = 64  # what bytes-only decodes and resizes to


def add_variant_arguments(p: argparse.ArgumentParser) -> None:
    """``tfsbench export``'s variant flags (none given: the reference classifier)."""
    p.add_argument(
        "--variant",
        choices=VARIANTS,
        default="reference",
        help="another signature: two-input (image + per-example float32 threshold), bytes-only (image_bytes "
        "string [-1]); with the flags below, a small one-convolution model (default: the reference)",
    )
    p.add_argument("--input-dtype", choices=INPUT_DTYPES, default="uint8", help="image input dtype (default uint8)")
    p.add_argument(
        "--image-size", type=non_negative_int, default=128, metavar="N", help="N x N images, 0: unknown (default 128)"
    )
    p.add_argument("--input-name", default="examples", metavar="NAME", help="image input name (default examples)")


@dataclass(frozen=True)
class VariantSpec:
    """What ``tfsbench export`` was asked for beyond the reference model."""

    variant: str = "reference"
    input_dtype: str = "uint8"
    image_size: int = 128
    input_name: str = "examples"

    @property
    def is_reference(self) -> bool:
        return self == VariantSpec()

    def check(self) -> None:
        if self.variant not in VARIANTS:
            raise ConfigError(f"unknown --variant '{self.variant}' (choose from {', '.join(VARIANTS)})")
        if self.input_dtype not in INPUT_DTYPES:
            raise ConfigError(f"unknown --input-dtype '{self.input_dtype}' (choose from {', '.join(INPUT_DTYPES)})")
        if self.image_size < 0:
            raise ConfigError(f"--image-size must be 0 (unknown) or positive, got {self.image_size}")
        if not self.input_name.isidentifier():
            raise ConfigError(f"--input-name '{self.input_name}' is not a usable tensor name (letters, digits, _)")


def _module(spec: VariantSpec, seed: int) -> tuple[Any, dict[str, Any]]:
    """The tf.Module and its signatures (concrete functions)."""
    tf = import_tensorflow()  # only an export needs TensorFlow

    rng = np.random.default_rng(seed)
    module = tf.Module(name="variant")
    module.conv_w = tf.Variable(rng.normal(0, 0.3, (3, 3, 3, FILTERS)).astype(np.float32), trainable=False)
    module.dense_w = tf.Variable(rng.normal(0, 0.5, (FILTERS, NUM_CLASSES)).astype(np.float32), trainable=False)
    module.dense_b = tf.Variable(rng.normal(0, 0.1, NUM_CLASSES).astype(np.float32), trainable=False)

    def classify(pixels: Any) -> dict[str, Any]:
        # pixels: float32 [N, H, W, 3] in [0, 1]
        x = tf.nn.relu(tf.nn.conv2d(pixels * 2.0 - 1.0, module.conv_w, 2, "SAME"))
        probabilities = tf.nn.softmax(tf.matmul(tf.reduce_mean(x, axis=[1, 2]), module.dense_w) + module.dense_b)
        return {"probabilities": probabilities, "classes": tf.argmax(probabilities, axis=1, output_type=tf.int64)}

    def scaled(images: Any) -> Any:
        if spec.input_dtype == "uint8":
            return tf.cast(images, tf.float32) / 255.0
        return tf.cast(images, tf.float32)

    side = spec.image_size or None
    image_spec = tf.TensorSpec([None, side, side, 3], getattr(tf, spec.input_dtype), name=spec.input_name)
    if spec.variant == "bytes-only":
        size = BYTES_IMAGE_SIZE

        def decode(encoded: Any) -> Any:
            image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
            return tf.image.resize(tf.cast(image, tf.float32) / 255.0, [size, size])

        def serve_bytes(image_bytes: Any) -> dict[str, Any]:
            pixels = tf.map_fn(decode, image_bytes, fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
            return classify(pixels)

        fn = tf.function(serve_bytes).get_concrete_function(tf.TensorSpec([None], tf.string, name="image_bytes"))
    elif spec.variant == "two-input":

        def serve_two(images: Any, threshold: Any) -> dict[str, Any]:
            outputs = classify(scaled(images))
            outputs["confident"] = tf.reduce_max(outputs["probabilities"], axis=1) >= threshold
            return outputs

        fn = tf.function(serve_two).get_concrete_function(
            image_spec, tf.TensorSpec([None], tf.float32, name="threshold")
        )
    else:
        fn = tf.function(lambda images: classify(scaled(images))).get_concrete_function(image_spec)
    return module, {"serving_default": fn}


def export_variant(out: Path, spec: VariantSpec, model_name: str, version: int, force: bool, seed: int) -> ExportResult:
    """Write the variant to ``out/model_name/version``."""
    tf = import_tensorflow()  # only an export needs TensorFlow

    spec.check()
    base = Path(out) / model_name
    version_dir = base / str(version)
    if version_dir.exists() and not force:
        raise ConfigError(f"{version_dir} already exists; pass --force to overwrite it or choose another --version")
    started = time.perf_counter()
    module, signatures = _module(spec, seed)
    write_version(version_dir, lambda tmp: tf.saved_model.save(module, str(tmp), signatures=signatures))
    side = spec.image_size or 128
    return ExportResult(
        version_dir=version_dir,
        size=f"{'single-input' if spec.variant == 'reference' else spec.variant} {spec.input_dtype}",
        parameter_count=int(sum(np.prod(v.shape) for v in module.variables)),
        flops_per_image=2 * 27 * FILTERS * (side // 2) ** 2 + 2 * FILTERS * NUM_CLASSES,
        signatures=describe_signatures(version_dir),
        files=sorted((p, p.stat().st_size) for p in version_dir.rglob("*") if p.is_file()),
        seconds=time.perf_counter() - started,
    )
