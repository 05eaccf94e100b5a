"""half_plus_two, the model of tensorflow/serving's own tests: ``y = 0.5 * x + 2`` behind predict,
classify and regress signatures, written as upstream's test exporter writes it.

tensorflow/serving's integration suite (``tensorflow_model_server_test.py``) serves
``saved_model_half_plus_two_cpu/00000123`` (a TF1 graph) and ``saved_model_half_plus_two_tf2_cpu``
(a ``tf.Module``), and ``saved_model_half_plus_three`` (an older export of ``0.5 * x + 3``). CI
cannot fetch those files, so this exporter builds SavedModels with the same
signatures, tensor names and version directory, for our own tests of the same cases:

========================  ===========  ================================  ======================
signature                 method       input                             output
========================  ===========  ================================  ======================
``serving_default``       predict      ``x`` float [-1,1] (``x:0``)      ``y`` (``y:0``)
``classify_x_to_y``       classify     ``inputs`` serialized tf.Example  ``scores`` (``y:0``)
``regress_x_to_y``        regress      ``inputs`` serialized tf.Example  ``outputs`` (``y:0``)
``regress_x_to_y2``       regress      ``inputs`` serialized tf.Example  ``outputs`` = 0.5x + 3
``regress_x2_to_y3``      regress      ``inputs`` float [-1,1] (``x2``)  ``outputs`` = 0.5x2 + 3
========================  ===========  ================================  ======================

The examples carry features ``x`` (float [1], required) and ``x2`` (float [1], default 0). In the
TF1 graph ``x:0`` is not a placeholder but the parsed feature (``tf.identity``); a predict feeds
it directly, which only a C++-style session run allows. ``plus=3.0`` gives half_plus_three
(with half_plus_two's signatures; upstream's older file has other signature keys).
An asset file (``assets/foo.txt``) is restored by the init op, as upstream's. The TF2 form
(``tf2=True``) is upstream's ``HalfPlusTwoModel``: every signature method is ``predict`` there,
``serving_default`` takes ``x`` of shape [1], and ``classify_x2_to_y3`` is added.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

from bench.errors import ConfigError, ModelError

__all__ = ["export_half_plus_two"]

ASSET_NAME = "foo.txt"
ASSET_CONTENTS = "asset-file-contents"


def export_half_plus_two(
    out: Path,
    *,
    model_name: str = "half_plus_two",
    version_dir: str = "00000123",
    tf2: bool = False,
    plus: float = 2.0,
) -> Path:
    """Write half_plus_two (``plus=3.0``: half_plus_three) to ``out/model_name/version_dir``; returns that path.

    Written to a hidden temporary directory and renamed into place, like ``export_model``.
    This module imports TensorFlow: import it only where a model is written (tests, scripts).
    """
    base = Path(out) / model_name
    target = base / version_dir
    if target.exists():
        raise ConfigError(f"{target} already exists")
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-half-plus-two-", dir=base))
    export_dir = tmp / "model"
    try:
        if tf2:
            module = HalfPlusTwoModule(plus, str(_asset(tmp)))
            tf.saved_model.save(module, str(export_dir), signatures=module.serving_signatures())
        else:
            _export_tf1(export_dir, plus, tmp)
        export_dir.rename(target)
    except OSError as exc:
        raise ModelError(f"could not write half_plus_two under {base}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _asset(tmp: Path) -> Path:
    source = tmp / "original" / ASSET_NAME
    source.parent.mkdir(parents=True)
    source.write_text(ASSET_CONTENTS)
    return source


def _export_tf1(export_dir: Path, plus: float, tmp: Path) -> None:
    v1 = tf.compat.v1
    sig = v1.saved_model.signature_def_utils
    info = v1.saved_model.utils.build_tensor_info
    consts = v1.saved_model.signature_constants
    builder = v1.saved_model.builder.SavedModelBuilder(str(export_dir))
    with v1.Session(graph=v1.Graph()) as sess:
        a = v1.Variable(0.5, name="a")
        b = v1.Variable(plus, name="b")
        c = v1.Variable(3.0, name="c")
        serialized = v1.placeholder(v1.string, name="tf_example", shape=[None])
        parsed = v1.parse_example(
            serialized,
            {
                "x": v1.FixedLenFeature([1], dtype=v1.float32),
                "x2": v1.FixedLenFeature([1], dtype=v1.float32, default_value=[0.0]),
            },
        )
        x = v1.identity(parsed["x"], name="x")
        y = v1.identity(v1.add(v1.multiply(a, x), b), name="y")
        y2 = v1.identity(v1.add(v1.multiply(a, x), c), name="y2")
        x2 = v1.identity(parsed["x2"], name="x2")
        a2 = v1.Variable(0.5, name="a2")
        c2 = v1.Variable(3.0, name="c2")
        y3 = v1.identity(v1.add(v1.multiply(a2, x2), c2), name="y3")

        asset_path = v1.constant(str(_asset(tmp)))
        v1.add_to_collection(v1.GraphKeys.ASSET_FILEPATHS, asset_path)
        filename = v1.Variable(ASSET_NAME, name="filename_tensor", trainable=False, collections=[])
        assign_filename = filename.assign(ASSET_NAME)

        # Upstream's published saved_model_half_plus_two_cpu (and its metadata JSON) declares the
        # examples input with unknown rank; the shapes in a SignatureDef are information only.
        examples_info = info(serialized)
        examples_info.tensor_shape.Clear()
        examples_info.tensor_shape.unknown_rank = True

        def regression(inputs: object, outputs: object) -> object:
            return sig.build_signature_def(
                {consts.REGRESS_INPUTS: inputs}, {consts.REGRESS_OUTPUTS: info(outputs)}, consts.REGRESS_METHOD_NAME
            )

        signatures = {
            "regress_x_to_y": regression(examples_info, y),
            "regress_x_to_y2": regression(examples_info, y2),
            "regress_x2_to_y3": regression(info(x2), y3),
            "classify_x_to_y": sig.build_signature_def(
                {consts.CLASSIFY_INPUTS: examples_info},
                {consts.CLASSIFY_OUTPUT_SCORES: info(y)},
                consts.CLASSIFY_METHOD_NAME,
            ),
            consts.DEFAULT_SERVING_SIGNATURE_DEF_KEY: sig.build_signature_def(
                {"x": info(x)}, {"y": info(y)}, consts.PREDICT_METHOD_NAME
            ),
        }
        sess.run(v1.global_variables_initializer())
        builder.add_meta_graph_and_variables(
            sess,
            [v1.saved_model.tag_constants.SERVING],
            signature_def_map=signatures,
            assets_collection=v1.get_collection(v1.GraphKeys.ASSET_FILEPATHS),
            main_op=v1.group(assign_filename),
        )
    builder.save()


_DEFAULT_X = tf.constant([0], shape=[1], dtype=tf.float32)


class HalfPlusTwoModule(tf.Module):  # type: ignore[misc]  # TensorFlow ships no stubs: tf.Module is Any
    """Upstream's native TF2 half_plus_two (``HalfPlusTwoModel`` in ``saved_model_half_plus_two.py``)."""

    def __init__(self, plus: float, asset_path: str) -> None:
        super().__init__()
        self.a = tf.Variable(0.5, name="a")
        self.b = tf.Variable(plus, name="b")
        self.c = tf.Variable(3.0, name="c")
        self.asset = tf.saved_model.Asset(asset_path)

    def serving_signatures(self) -> dict[str, object]:
        return {
            "regress_x_to_y": self.regress_xy,
            "regress_x_to_y2": self.regress_xy2,
            "regress_x2_to_y3": self.regress_x2y3,
            "classify_x_to_y": self.classify_xy,
            "classify_x2_to_y3": self.classify_x2y3,
            tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY: self.predict,
        }

    def _x(self, serialized: tf.Tensor) -> tf.Tensor:
        return tf.io.parse_example(serialized, _FEATURES)["x"]

    # TensorFlow ships no stubs: tf.function is an untyped decorator (here and below).
    @tf.function(input_signature=[tf.TensorSpec(shape=[1], dtype=tf.float32)])  # type: ignore[untyped-decorator]
    def predict(self, x: tf.Tensor = _DEFAULT_X) -> dict[str, tf.Tensor]:  # the default becomes SignatureDef.defaults
        return {"y": self.a * x + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])  # type: ignore[untyped-decorator]
    def regress_xy(self, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"outputs": self.a * self._x(serialized) + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])  # type: ignore[untyped-decorator]
    def regress_xy2(self, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"outputs": self.a * self._x(serialized) + self.c}

    @tf.function(input_signature=[tf.TensorSpec([1], tf.float32, name="inputs")])  # type: ignore[untyped-decorator]
    def regress_x2y3(self, x2: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"outputs": self.a * x2 + self.c}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])  # type: ignore[untyped-decorator]
    def classify_xy(self, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"scores": self.a * self._x(serialized) + self.b}

    @tf.function(input_signature=[tf.TensorSpec([1], tf.float32, name="inputs")])  # type: ignore[untyped-decorator]
    def classify_x2y3(self, x2: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"scores": self.a * x2 + self.c}


_FEATURES = {
    "x": tf.io.FixedLenFeature([1], dtype=tf.float32),
    "x2": tf.io.FixedLenFeature([1], dtype=tf.float32, default_value=[0.0]),
}
