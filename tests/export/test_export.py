"""The exporter writes the model contract of the architecture, loadable by TensorFlow Serving."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorflow.core.protobuf import saved_model_pb2

from bench.cli import main
from export import export_model


def _images(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 128, 128, 3), dtype=np.uint8)


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def test_layout_is_what_tf_serving_scans(model_base_path: Path) -> None:
    version_dir = model_base_path / "1"
    assert (version_dir / "saved_model.pb").is_file()
    assert (version_dir / "variables").is_dir()
    assert any((version_dir / "variables").glob("variables.data-*"))
    # No temporary directories are left beside the version.
    assert [p.name for p in model_base_path.iterdir()] == ["1"]


def test_signatures_match_the_contract(model_base_path: Path) -> None:
    model = tf.saved_model.load(str(model_base_path / "1"))
    assert set(model.signatures) == {"serving_default", "serving_bytes"}

    default = model.signatures["serving_default"]
    (inputs,) = default.structured_input_signature[1].items()
    assert inputs[0] == "examples"
    assert inputs[1].dtype == tf.uint8
    assert inputs[1].shape.as_list() == [None, 128, 128, 3]

    by_bytes = model.signatures["serving_bytes"]
    (inputs,) = by_bytes.structured_input_signature[1].items()
    assert inputs[0] == "image_bytes"
    assert inputs[1].dtype == tf.string
    assert inputs[1].shape.as_list() == [None]

    for signature in (default, by_bytes):
        outputs = signature.structured_outputs
        assert set(outputs) == {"probabilities", "classes"}
        assert outputs["probabilities"].dtype == tf.float32
        assert outputs["probabilities"].shape.as_list() == [None, 10]
        assert outputs["classes"].dtype == tf.int64
        assert outputs["classes"].shape.as_list() == [None]


def test_signature_defs_are_predict_signatures(model_base_path: Path) -> None:
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((model_base_path / "1" / "saved_model.pb").read_bytes())
    signature_defs = saved.meta_graphs[0].signature_def
    for name in ("serving_default", "serving_bytes"):
        assert signature_defs[name].method_name == "tensorflow/serving/predict"
    assert signature_defs["serving_default"].inputs["examples"].name == "serving_default_examples:0"
    assert signature_defs["serving_bytes"].inputs["image_bytes"].name == "serving_bytes_image_bytes:0"


def test_png_bytes_predict_the_same_as_uint8_examples(model_base_path: Path) -> None:
    model = tf.saved_model.load(str(model_base_path / "1"))
    images = _images(4)
    by_array = model.signatures["serving_default"](examples=tf.constant(images))
    by_png = model.signatures["serving_bytes"](image_bytes=tf.constant([_png(im) for im in images]))
    np.testing.assert_array_equal(by_array["classes"].numpy(), by_png["classes"].numpy())
    np.testing.assert_allclose(by_array["probabilities"].numpy(), by_png["probabilities"].numpy(), atol=1e-6)
    probabilities = by_array["probabilities"].numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_bytes_signature_resizes_other_sizes(model_base_path: Path) -> None:
    model = tf.saved_model.load(str(model_base_path / "1"))
    big = np.random.default_rng(1).integers(0, 256, size=(300, 451, 3), dtype=np.uint8)
    out = model.signatures["serving_bytes"](image_bytes=tf.constant([_png(big)]))
    assert out["probabilities"].shape == (1, 10)


def test_same_arguments_give_identical_predictions(tmp_path: Path) -> None:
    images = tf.constant(_images(3, seed=7))
    first = export_model(tmp_path / "a", size="tiny")
    second = export_model(tmp_path / "b", size="tiny")
    outputs = [
        tf.saved_model.load(str(r.version_dir)).signatures["serving_default"](examples=images) for r in (first, second)
    ]
    np.testing.assert_array_equal(outputs[0]["probabilities"].numpy(), outputs[1]["probabilities"].numpy())
    assert first.parameter_count == second.parameter_count


def test_sizes_differ_in_parameters_and_compute(tmp_path: Path) -> None:
    tiny = export_model(tmp_path, size="tiny", version=1)
    small = export_model(tmp_path, size="small", version=2)
    assert small.parameter_count > tiny.parameter_count
    assert small.flops_per_image > tiny.flops_per_image


def test_cli_exports_and_prints_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--out", str(tmp_path), "--version", "3"]) == 0
    printed = capsys.readouterr().out
    assert "serving_default" in printed
    assert "examples: uint8 [-1,128,128,3]" in printed
    assert "parameters:" in printed
    assert (tmp_path / "classifier" / "3" / "saved_model.pb").is_file()


def test_cli_refuses_to_overwrite_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--out", str(tmp_path)]) == 0
    before = (tmp_path / "classifier" / "1" / "saved_model.pb").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["export", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err
    assert "--force" in err
    assert "Traceback" not in err
    assert (tmp_path / "classifier" / "1" / "saved_model.pb").stat().st_mtime_ns == before
    assert main(["export", "--out", str(tmp_path), "--force"]) == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(["--size", "huge"], "invalid choice: 'huge'", id="unknown-size"),
        pytest.param(["--version", "-1"], "'-1' must be zero or a positive integer", id="negative-version"),
        pytest.param(["--out"], "expected one argument", id="missing-out"),
    ],
)
def test_cli_bad_arguments_exit_2(extra: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["export", *extra])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_out_that_is_a_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    assert main(["export", "--out", str(not_a_dir)]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["export", "--out", str(not_a_dir / "models")]) == 2
    assert "Traceback" not in capsys.readouterr().err
