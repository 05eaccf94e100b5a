"""Image sources: deterministic batches, realistic content, clear errors for bad directories."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.errors import ConfigError
from bench.payloads.images import DirectoryImages, SyntheticImages, image_source
from tests.helpers.paths import PHOTOS


def _png_size(image: np.ndarray) -> int:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return len(out.getvalue())


def test_synthetic_batches_are_deterministic_and_distinct() -> None:
    source = SyntheticImages(32, 48, seed=3)
    first = source.batch(4, index=0)
    assert first.shape == (4, 32, 48, 3)
    assert first.dtype == np.uint8
    assert np.array_equal(first, SyntheticImages(32, 48, seed=3).batch(4, index=0))
    second = source.batch(4, index=1)
    assert not np.array_equal(first, second)
    # image k of the stream does not depend on how it was batched
    assert np.array_equal(source.batch(2, index=1)[0], first[2])
    assert not np.array_equal(first, SyntheticImages(32, 48, seed=4).batch(4))
    assert len({img.tobytes() for img in source.batch(8)}) == 8


def test_synthetic_images_compress_like_photos_not_like_noise() -> None:
    image = SyntheticImages().batch(1)[0]
    noise = np.random.default_rng(0).integers(0, 256, size=image.shape, dtype=np.uint8)
    raw = image.nbytes
    # smooth content with mild noise: PNG well below raw size, random noise is incompressible
    assert _png_size(image) < 0.75 * raw
    assert _png_size(noise) > raw
    assert 40 < image.mean() < 215
    assert image.std() > 10


def test_bad_batch_arguments() -> None:
    with pytest.raises(ConfigError, match="positive"):
        SyntheticImages().batch(0)
    with pytest.raises(ConfigError, match="index"):
        SyntheticImages().batch(1, index=-1)
    with pytest.raises(ConfigError, match="image size"):
        SyntheticImages(0, 10)


def _write_images(folder: Path, count: int) -> None:
    folder.mkdir(exist_ok=True)
    source = SyntheticImages(40, 60, seed=9)
    for k in range(count):
        fmt, suffix = ("PNG", ".png") if k % 2 else ("JPEG", ".JPG")
        Image.fromarray(source.image(k)).save(folder / f"img{k}{suffix}", format=fmt)
    (folder / "notes.txt").write_text("not an image")


def test_directory_images_resize_and_repeat_with_variation(tmp_path: Path) -> None:
    _write_images(tmp_path / "imgs", 3)
    source = DirectoryImages(tmp_path / "imgs", height=16, width=24)
    assert len(source) == 3
    batch = source.batch(8)
    assert batch.shape == (8, 16, 24, 3)
    assert batch.dtype == np.uint8
    assert np.array_equal(batch, DirectoryImages(tmp_path / "imgs", 16, 24).batch(8))
    # more images than files: later passes are different crops/mirrors, not copies
    assert len({img.tobytes() for img in batch}) == 8
    assert not np.array_equal(source.batch(3, index=0), source.batch(3, index=1))


def test_directory_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        DirectoryImages(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"has no .png"):
        DirectoryImages(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ConfigError, match=r"cannot read image .*broken\.png"):
        DirectoryImages(tmp_path / "bad")
    file = tmp_path / "file.png"
    file.write_bytes(b"x")
    with pytest.raises(ConfigError, match="not a directory"):
        DirectoryImages(file)


def test_image_source_picks_the_kind(tmp_path: Path) -> None:
    assert isinstance(image_source(None, 8, 8), SyntheticImages)
    _write_images(tmp_path / "imgs", 1)
    assert isinstance(image_source(tmp_path / "imgs", 8, 8), DirectoryImages)


def test_real_photos() -> None:
    if not PHOTOS.is_dir():
        pytest.skip(f"sample photos not found at {PHOTOS}")
    batch = DirectoryImages(PHOTOS).batch(4)
    assert batch.shape == (4, 128, 128, 3)
    assert batch.std() > 10
