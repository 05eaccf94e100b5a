"""The guard against inputs that abort the process: it finds the convolutions a fed tensor reaches
at its own rank, and refuses only ranks below 4 there, with TensorFlow's own kernel messages."""

from __future__ import annotations

import numpy as np
import pytest

from bench.serving.kernel_guard import ConvolutionRankGuard
from bench.serving.saved_model import LoadedVersion
from bench.serving.status import ServingError


def meta_graph(build):
    """A MetaGraphDef whose serving_default feeds ``x`` (what ``build(x)`` consumes)."""
    import tensorflow as tf
    from tensorflow.core.protobuf import meta_graph_pb2

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, None, name="x")
        build(x)
    meta = meta_graph_pb2.MetaGraphDef()
    meta.graph_def.CopyFrom(graph.as_graph_def())
    meta.signature_def["serving_default"].inputs["x"].name = "x:0"
    return meta


def refusal(guard: ConvolutionRankGuard, shape: tuple[int, ...]) -> str | None:
    try:
        guard.check({"x:0": np.zeros(shape, np.float32)})
    except ServingError as exc:
        return f"{exc.code}: {exc.message}"
    return None


def test_the_reference_model_s_image_input_reaches_its_first_convolution(model_base_path) -> None:
    loaded = LoadedVersion("classifier", 1, model_base_path / "1")
    # Through the signature wrapper and the serve function (two nested function calls), not
    # through serving_bytes' decode/map_fn.
    assert loaded.guarded_inputs == {"serving_default_examples:0": ("Conv2D",)}


def test_ranks_below_4_are_refused_and_everything_else_passes() -> None:
    import tensorflow as tf

    guard = ConvolutionRankGuard(
        meta_graph(lambda x: tf.nn.conv2d(tf.cast(x, tf.float32) * 2.0 - 1.0, tf.ones([3, 3, 3, 4]), 1, "SAME"))
    )
    assert refusal(guard, (2, 8, 3)) == "INVALID_ARGUMENT: convolution input must be 4-dimensional: [2,8,3]"
    assert refusal(guard, (3,)) == "INVALID_ARGUMENT: convolution input must be 4-dimensional: [3]"
    assert refusal(guard, ()) == "INVALID_ARGUMENT: convolution input must be 4-dimensional: []"
    for fine in ((2, 8, 8, 3), (1, 2, 8, 8, 3), (0, 8, 8, 3)):
        assert refusal(guard, fine) is None  # TensorFlow runs or refuses these itself, without aborting


@pytest.mark.parametrize(
    ("op", "message"),
    [
        ("depthwise", "INVALID_ARGUMENT: input must be 4-dimensional[8,3]"),
        ("conv3d", "INVALID_ARGUMENT: input must be 5-dimensional"),
        ("relu_bias", "INVALID_ARGUMENT: convolution input must be 4-dimensional: [8,3]"),
    ],
)
def test_each_convolution_gets_its_own_kernel_s_message(op: str, message: str) -> None:
    import tensorflow as tf

    def build(x):
        if op == "depthwise":
            tf.nn.depthwise_conv2d(x, tf.ones([3, 3, 3, 1]), [1, 1, 1, 1], "SAME")
        elif op == "conv3d":
            tf.nn.conv3d(x, tf.ones([3, 3, 3, 3, 4]), [1, 1, 1, 1, 1], "SAME")
        else:
            tf.nn.conv2d(tf.nn.relu(tf.nn.bias_add(x, tf.zeros([3]))), tf.ones([1, 1, 3, 4]), 1, "SAME")

    assert refusal(ConvolutionRankGuard(meta_graph(build)), (8, 3)) == message


def test_broadcasting_against_a_known_operand_is_followed() -> None:
    import tensorflow as tf

    # x + [1,1,1,3] has rank 4 whatever x's rank: nothing to refuse.
    wide = ConvolutionRankGuard(
        meta_graph(lambda x: tf.nn.conv2d(x + tf.zeros([1, 1, 1, 3]), tf.ones([1, 1, 3, 4]), 1, "SAME"))
    )
    assert wide.guarded == {}
    # x * [8,3] keeps a rank-3 x at rank 3; the message shows the broadcast shape.
    narrow = ConvolutionRankGuard(
        meta_graph(lambda x: tf.nn.conv2d(x * tf.ones([8, 3]), tf.ones([1, 1, 3, 4]), 1, "SAME"))
    )
    assert refusal(narrow, (2, 1, 3)) == "INVALID_ARGUMENT: convolution input must be 4-dimensional: [2,8,3]"
    assert refusal(narrow, (2, 5, 3)) is None  # [5] against [8] fails in Mul, before the convolution


def test_ops_that_change_the_rank_end_the_walk() -> None:
    import tensorflow as tf

    for reshaping in (
        lambda x: tf.reshape(x, [-1, 8, 8, 3]),
        lambda x: tf.expand_dims(x, 0),
        lambda x: x + tf.compat.v1.placeholder(tf.float32, None),  # an operand of unknown rank
    ):
        guard = ConvolutionRankGuard(
            meta_graph(lambda x, f=reshaping: tf.nn.conv2d(f(x), tf.ones([1, 1, 3, 4]), 1, "SAME"))
        )
        assert guard.guarded == {}
        assert refusal(guard, (8, 3)) is None
