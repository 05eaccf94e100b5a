"""Write the reference classifier as ``<out>/<model_name>/<version>/`` for TensorFlow Serving.

How this maps to the seed article's Estimator code:

* ``serving_input_receiver_fn_image``'s placeholder (uint8, [None,128,128,3], named ``images``)
  keyed ``examples`` becomes the ``serving_default`` input ``examples``;
* its ``preprocess_batch`` becomes the cast-and-scale at the top of the graph;
* ``PredictOutput`` becomes the signature's outputs, ``probabilities`` and ``classes``, with
  method name ``tensorflow/serving/predict``;
* ``export_savedmodel(export_dir_base=...)`` wrote a numbered sub-directory, which here is the
  explicit ``--version``.

A second signature, ``serving_bytes``, takes encoded PNG/JPEG strings so that JSON integers and
base64 image bytes can be compared on one model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import ConfigError, ModelError
from bench.tensorflow_import import import_tensorflow

DEFAULT_SEED = 20180509
SIZES = ("tiny", "small", "medium")


@dataclass(frozen=True)
class ExportResult:
    """What ``export_model`` wrote."""

    version_dir: Path
    size: str
    parameter_count: int
    flops_per_image: int
    signatures: dict[str, dict[str, dict[str, str]]]  # name -> {"inputs"|"outputs": {key: "dtype shape"}}
    files: list[tuple[Path, int]] = field(default_factory=list)  # (path, bytes)
    seconds: float = 0.0

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)

    def summary(self) -> str:
        lines = [f"exported {self.size} classifier to {self.version_dir} in {self.seconds:.1f} s"]
        lines.append(f"  parameters: {self.parameter_count:,}")
        pixels = 128 * 128
        lines.append(
            f"  compute: {self.flops_per_image / 1e6:,.1f} MFLOPs per image"
            f" ({self.flops_per_image / pixels:,.0f} FLOPs per input pixel)"
        )
        for name, spec in self.signatures.items():
            lines.append(f"  signature {name}:")
            for kind in ("inputs", "outputs"):
                for key, desc in spec[kind].items():
                    lines.append(f"    {kind[:-1]:6} {key}: {desc}")
        lines.append(f"  files ({self.total_bytes / 1e6:.2f} MB):")
        lines.extend(f"    {path} ({size:,} bytes)" for path, size in self.files)
        return "\n".join(lines)


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out} is not writable (no write permission on {probe})")


def write_version(version_dir: Path, save: Callable[[Path], object]) -> None:
    """``save(tmp)`` into a hidden temp directory beside ``version_dir``, then rename it into place.

    A polling server never sees half a version; an existing one is replaced (the caller decided
    that --force allows it); a failed save leaves nothing behind.
    """
    base = version_dir.parent
    try:
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version_dir.name}-", dir=base))
    except OSError as exc:
        raise ConfigError(f"cannot create {base}: {exc.strerror}") from exc
    try:
        save(tmp)
        if version_dir.exists():
            shutil.rmtree(version_dir)
        tmp.rename(version_dir)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelError(f"could not write the SavedModel under {base}: {exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _describe(spec: object) -> str:
    dims = ",".join("-1" if d is None else str(d) for d in spec.shape.as_list())  # type: ignore[attr-defined]
    return f"{spec.dtype.name} [{dims}]"  # type: ignore[attr-defined]


def describe_signatures(version_dir: Path) -> dict[str, dict[str, dict[str, str]]]:
    """Each signature's inputs and outputs, read back from disk rather than what we meant to write."""
    tf = import_tensorflow()  # 5 s and hundreds of MB, wanted only here

    loaded = tf.saved_model.load(str(version_dir))
    return {
        name: {
            "inputs": {k: _describe(v) for k, v in fn.structured_input_signature[1].items()},
            "outputs": {k: _describe(v) for k, v in fn.structured_outputs.items()},
        }
        for name, fn in loaded.signatures.items()
    }


def export_model(
    out: Path,
    model_name: str = "classifier",
    version: int = 1,
    size: str = "tiny",
    force: bool = False,
    seed: int = DEFAULT_SEED,
    max_image_pixels: int | None = None,
) -> ExportResult:
    """Export the classifier to ``out/model_name/version``.

    The SavedModel is written to a hidden temporary directory beside the version directory and
    renamed into place, so a server polling ``out/model_name`` never sees a half-written version.
    """
    if size not in SIZES:
        raise ConfigError(f"unknown --size '{size}' (choose from {', '.join(SIZES)})")
    if max_image_pixels is not None and not 0 < max_image_pixels <= 2**31:
        raise ConfigError(f"--max-image-pixels must be between 1 and 2147483648, got {max_image_pixels}")
    if version < 0:
        raise ConfigError(f"--version must be a non-negative integer, got {version}")
    if not model_name or "/" in model_name or model_name in (".", ".."):
        raise ConfigError(f"--model-name '{model_name}' is not a usable directory name")
    out = Path(out)
    _check_out_dir(out)
    base = out / model_name
    version_dir = base / str(version)
    if version_dir.exists() and not force:
        raise ConfigError(f"{version_dir} already exists; pass --force to overwrite it or choose another --version")

    started = time.perf_counter()
    tf = import_tensorflow()  # 5 s and hundreds of MB, wanted only here

    from export.network import DEFAULT_MAX_IMAGE_PIXELS, ImageClassifier  # lazy: imports TensorFlow

    module = ImageClassifier(size, seed, max_image_pixels or DEFAULT_MAX_IMAGE_PIXELS)
    signatures = {
        "serving_default": module.serve_examples.get_concrete_function(),
        "serving_bytes": module.serve_image_bytes.get_concrete_function(),
    }
    write_version(version_dir, lambda tmp: tf.saved_model.save(module, str(tmp), signatures=signatures))

    described = describe_signatures(version_dir)
    files = sorted((p, p.stat().st_size) for p in version_dir.rglob("*") if p.is_file())
    return ExportResult(
        version_dir=version_dir,
        size=size,
        parameter_count=module.parameter_count(),
        flops_per_image=module.flops_per_image(),
        signatures=described,
        files=files,
        seconds=time.perf_counter() - started,
    )
