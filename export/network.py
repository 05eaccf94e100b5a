"""The reference image classifier: a deterministic convolutional network as a ``tf.Module``.

Weights come from a seeded numpy generator, so two exports with the same arguments predict
exactly the same. ``SIZES`` sets the compute cost, so capacity planning can model a heavier
network than the default without training anything.

TensorFlow is imported by the caller (``export.saved_model``); this module is only imported
once TensorFlow is wanted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

IMAGE_SIZE = 128
CHANNELS = 3
NUM_CLASSES = 10
# serving_bytes refuses images whose header declares more pixels than this, before decoding
# (a 20000x20000 PNG is a 1.5 MB body but 1.2 GB decoded). ``tfsbench export --max-image-pixels``.
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096


@dataclass(frozen=True)
class NetworkSpec:
    """Layers of one size: plain strided convolutions, then residual stages."""

    stem: tuple[tuple[int, int], ...]  # (filters, stride) per 3x3 convolution
    stages: tuple[tuple[int, int], ...] = ()  # (filters, residual blocks), each stage halves H and W
    description: str = ""


SIZES: dict[str, NetworkSpec] = {
    "tiny": NetworkSpec(
        stem=((16, 2), (32, 2), (64, 2)),
        description="3 strided 3x3 convolutions",
    ),
    "small": NetworkSpec(
        stem=((32, 2), (64, 2), (128, 2), (128, 1)),
        description="4 convolutions up to 128 filters",
    ),
    "medium": NetworkSpec(
        stem=((32, 2),),
        stages=((32, 2), (64, 2), (128, 2)),
        description="ResNet-like: a stem and 3 stages of 2 residual blocks (32-128 filters)",
    ),
}


class ImageClassifier(tf.Module):  # type: ignore[misc]  # TensorFlow ships no stubs: tf.Module is Any
    """uint8 images [N,128,128,3] in; class probabilities [N,10] and classes [N] out."""

    def __init__(self, size: str, seed: int, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        super().__init__(name="image_classifier")
        self._max_image_pixels = max_image_pixels
        spec = SIZES[size]
        rng = np.random.default_rng(seed)
        self._stem: list[tuple[tf.Variable, tf.Variable, int]] = []
        channels = CHANNELS
        for filters, stride in spec.stem:
            self._stem.append((*self._conv_weights(rng, channels, filters), stride))
            channels = filters
        # Each residual block: (conv1 w, b, conv2 w, b, projection w or None, stride).
        self._blocks: list[tuple[tf.Variable, ...]] = []
        self._block_strides: list[int] = []
        self._block_projects: list[bool] = []
        for stage_index, (filters, blocks) in enumerate(spec.stages):
            for block_index in range(blocks):
                stride = 2 if (block_index == 0 and stage_index > 0) else 1
                w1, b1 = self._conv_weights(rng, channels, filters)
                w2, b2 = self._conv_weights(rng, filters, filters, scale=0.25)
                weights: tuple[tf.Variable, ...] = (w1, b1, w2, b2)
                project = stride != 1 or channels != filters
                if project:
                    weights += (self._conv_weights(rng, channels, filters, kernel=1)[0],)
                self._blocks.append(weights)
                self._block_strides.append(stride)
                self._block_projects.append(project)
                channels = filters
        dense = rng.normal(0.0, np.sqrt(1.0 / channels), size=(channels, NUM_CLASSES)).astype(np.float32)
        self._dense_w = tf.Variable(dense, name="dense_w", trainable=False)
        self._dense_b = tf.Variable(rng.normal(0.0, 0.1, NUM_CLASSES).astype(np.float32), name="dense_b")

    @staticmethod
    def _conv_weights(
        rng: np.random.Generator, in_ch: int, out_ch: int, kernel: int = 3, scale: float = 1.0
    ) -> tuple[tf.Variable, tf.Variable]:
        fan_in = kernel * kernel * in_ch
        w = rng.normal(0.0, scale * np.sqrt(2.0 / fan_in), size=(kernel, kernel, in_ch, out_ch)).astype(np.float32)
        b = rng.normal(0.0, 0.01, size=(out_ch,)).astype(np.float32)
        return tf.Variable(w, trainable=False), tf.Variable(b, trainable=False)

    def flops_per_image(self) -> int:
        """Multiply-adds x 2 of the convolutions and the dense layer for one 128x128 image."""
        flops, side = 0, IMAGE_SIZE
        for w, _, stride in self._stem:
            side = -(-side // stride)
            flops += 2 * int(np.prod(w.shape)) * side * side
        for weights, stride in zip(self._blocks, self._block_strides, strict=True):
            side = -(-side // stride)
            flops += sum(2 * int(np.prod(weights[i].shape)) * side * side for i in (0, 2, 4) if i < len(weights))
        return flops + 2 * int(np.prod(self._dense_w.shape))

    def parameter_count(self) -> int:
        return int(sum(np.prod(v.shape) for v in self.variables))

    @staticmethod
    def preprocess(images: tf.Tensor) -> tf.Tensor:
        """uint8 [0, 255] -> float32 [-1, 1], as the seed's ``preprocess_batch`` did inside the graph."""
        return tf.cast(images, tf.float32) * (2.0 / 255.0) - 1.0

    def logits(self, images: tf.Tensor) -> tf.Tensor:
        x = self.preprocess(images)
        for w, b, stride in self._stem:
            x = tf.nn.relu(tf.nn.conv2d(x, w, stride, "SAME") + b)
        for weights, stride, project in zip(self._blocks, self._block_strides, self._block_projects, strict=True):
            w1, b1, w2, b2 = weights[:4]
            h = tf.nn.relu(tf.nn.conv2d(x, w1, stride, "SAME") + b1)
            h = tf.nn.conv2d(h, w2, 1, "SAME") + b2
            shortcut = tf.nn.conv2d(x, weights[4], stride, "SAME") if project else x
            x = tf.nn.relu(h + shortcut)
        pooled = tf.reduce_mean(x, axis=[1, 2])
        return tf.matmul(pooled, self._dense_w) + self._dense_b

    def outputs(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = tf.nn.softmax(self.logits(images))
        return {"probabilities": probabilities, "classes": tf.argmax(probabilities, axis=1, output_type=tf.int64)}

    # TensorFlow ships no stubs: tf.function is an untyped decorator (here and below).
    @tf.function(  # type: ignore[untyped-decorator]
        input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, CHANNELS], tf.uint8)]
    )
    def serve_examples(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        return self.outputs(examples)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])  # type: ignore[untyped-decorator]
    def serve_image_bytes(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        def decode(encoded: tf.Tensor) -> tf.Tensor:
            with tf.control_dependencies([image_size_check(encoded, self._max_image_pixels)]):
                image = tf.io.decode_image(encoded, channels=CHANNELS, expand_animations=False)
            # Same-size images pass through resize unchanged, so a lossless PNG of a 128x128
            # image predicts exactly what the uint8 signature predicts for it.
            resized = tf.image.resize(image, [IMAGE_SIZE, IMAGE_SIZE], antialias=True)
            return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

        images = tf.map_fn(
            decode, image_bytes, fn_output_signature=tf.TensorSpec([IMAGE_SIZE, IMAGE_SIZE, CHANNELS], tf.uint8)
        )
        return self.outputs(images)


def _unsigned(header: tf.Tensor, start: int, count: int, big_endian: bool) -> tf.Tensor:
    """An unsigned integer of ``count`` header bytes at ``start``, as int64."""
    value = tf.constant(0, tf.int64)
    order = range(start, start + count) if big_endian else range(start + count - 1, start - 1, -1)
    for i in order:
        value = value * 256 + tf.cast(header[i], tf.int64)
    return value


def image_size_check(encoded: tf.Tensor, max_pixels: int) -> tf.Operation:
    """An op that fails (INVALID_ARGUMENT) when ``encoded``'s header declares more than
    ``max_pixels`` pixels, read without decoding: JPEG by ``extract_jpeg_shape`` (SOF marker),
    PNG from IHDR, GIF from the logical screen, BMP from its info header. Other bytes pass
    (``decode_image`` refuses them with its own error)."""
    head = tf.strings.substr(encoded, 0, 32)  # shorter strings: as long as they are
    header = tf.io.decode_raw(tf.strings.substr(tf.strings.join([head, tf.constant(b"\0" * 32)]), 0, 32), tf.uint8)
    prefix = tf.strings.substr(encoded, 0, 8)

    def jpeg() -> tf.Tensor:
        shape = tf.cast(tf.image.extract_jpeg_shape(encoded), tf.int64)
        return tf.stack([shape[1], shape[0]])

    def png() -> tf.Tensor:
        return tf.stack([_unsigned(header, 16, 4, True), _unsigned(header, 20, 4, True)])

    def gif() -> tf.Tensor:
        return tf.stack([_unsigned(header, 6, 2, False), _unsigned(header, 8, 2, False)])

    def bmp() -> tf.Tensor:
        width = _unsigned(header, 18, 4, False)
        height = _unsigned(header, 22, 4, False)
        # Signed 32-bit fields; a negative height means a top-down bitmap.
        height = tf.where(height >= 2**31, 2**32 - height, height)
        return tf.stack([tf.where(width >= 2**31, 2**32 - width, width), height])

    def other() -> tf.Tensor:
        return tf.zeros([2], tf.int64)

    width_height = tf.case(
        [
            (tf.io.is_jpeg(encoded), jpeg),
            (tf.equal(prefix, b"\x89PNG\r\n\x1a\n"), png),
            (tf.equal(tf.strings.substr(prefix, 0, 3), b"GIF"), gif),
            (tf.equal(tf.strings.substr(prefix, 0, 2), b"BM"), bmp),
        ],
        default=other,
        exclusive=False,
    )
    width, height = width_height[0], width_height[1]
    # Each side first: the product of two 32-bit sides can overflow int64.
    ok = (width <= max_pixels) & (height <= max_pixels) & (width * height <= max_pixels)
    message = tf.strings.format(
        "Image of {}x{} pixels is larger than this model decodes: at most {} pixels (export --max-image-pixels)",
        (width, height, max_pixels),
    )
    return tf.debugging.Assert(ok, [message])
