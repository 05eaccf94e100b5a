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

    def __init__(self, size: str, seed: int) -> None:
        super().__init__(name="image_classifier")
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
            image = tf.io.decode_image(encoded, channels=CHANNELS, expand_animations=False)
            # Same-size images pass through resize unchanged, so a lossless PNG of a 128x128
            # image predicts exactly what the uint8 signature predicts for it.
            resized = tf.image.resize(image, [IMAGE_SIZE, IMAGE_SIZE], antialias=True)
            return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

        images = tf.map_fn(
            decode, image_bytes, fn_output_signature=tf.TensorSpec([IMAGE_SIZE, IMAGE_SIZE, CHANNELS], tf.uint8)
        )
        return self.outputs(images)
