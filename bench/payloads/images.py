"""Image sources: where the uint8 batches that every encoding serializes come from.

Two sources share one interface, ``.batch(size, index=0) -> np.ndarray`` (uint8
``[size, height, width, 3]``), deterministic for ``(size, index)``:

* ``SyntheticImages``: seeded smooth gradients and blobs plus mild noise. Uniform random noise
  would be the worst case for PNG/JPEG (incompressible) and would make every digit count equally
  likely; smooth content with some texture gives sizes close to real photos.
* ``DirectoryImages``: real PNG/JPEG files, resized to the model's input size with Pillow. When a
  batch needs more images than the directory holds, later passes take shifted crops and mirror
  images of the same photos, so that distinct batch indexes still give distinct batches.

Image ``k`` of the stream is ``index * size + i`` for row ``i`` of ``batch(size, index)``, so
batches with different indexes (same size) never share an image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from bench.errors import ConfigError

CHANNELS = 3
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# A directory of thousands of photos is more than a benchmark needs, and loading it would
# dominate start-up; the first files in name order are enough for variety.
MAX_DIRECTORY_IMAGES = 1024


class ImageSource(Protocol):
    """Anything that hands out deterministic uint8 batches."""

    height: int
    width: int

    def batch(self, size: int, index: int = 0) -> np.ndarray: ...


def _check_size(size: int, index: int) -> None:
    if size <= 0:
        raise ConfigError(f"batch size must be a positive integer, got {size}")
    if index < 0:
        raise ConfigError(f"batch index must be zero or positive, got {index}")


def _check_dims(height: int, width: int) -> None:
    if height <= 0 or width <= 0:
        raise ConfigError(f"image size must be positive, got {height}x{width}")


class SyntheticImages:
    """Seeded smooth images with mild noise, e.g. ``SyntheticImages(128, 128, seed=0).batch(16)``.

    Each image is a per-channel linear gradient, a few soft Gaussian blobs and Gaussian noise
    (standard deviation about 4 grey levels), clipped to 0..255. Image ``k`` depends only on
    ``(seed, k)``, so any batch can be regenerated without generating the ones before it.
    """

    def __init__(self, height: int = 128, width: int = 128, seed: int = 0) -> None:
        _check_dims(height, width)
        self.height = height
        self.width = width
        self.seed = seed
        self._ys = np.linspace(0.0, 1.0, height, dtype=np.float32)
        self._xs = np.linspace(0.0, 1.0, width, dtype=np.float32)
        self._yy, self._xx = np.meshgrid(self._ys, self._xs, indexing="ij")
        pixels = CHANNELS * height * width
        self._noise = np.random.default_rng((seed, 0, 1)).standard_normal(4 * pixels, dtype=np.float32) * np.float32(
            4.0
        )

    def __repr__(self) -> str:
        return f"SyntheticImages(height={self.height}, width={self.width}, seed={self.seed})"

    def image(self, k: int) -> np.ndarray:
        """Image number ``k`` of this source's stream, uint8 ``[height, width, 3]``."""
        return self._planes(k).transpose(1, 2, 0)

    def _planes(self, k: int) -> np.ndarray:
        # Channel-first (3, H, W) float32 arithmetic: broadcasting over a trailing axis of 3 is
        # several times slower than over rows of W, and pools draw thousands of images.
        rng = np.random.default_rng((self.seed, k))
        base = rng.uniform(30, 200, size=(CHANNELS, 1, 1)).astype(np.float32)
        slope = rng.uniform(-80, 80, size=(2, CHANNELS, 1, 1)).astype(np.float32)
        img = base + self._yy * slope[0] + self._xx * slope[1]
        for _ in range(3):
            cy, cx = rng.uniform(0, 1, size=2)
            radius = rng.uniform(0.08, 0.35)
            amp = rng.uniform(-70, 70, size=(CHANNELS, 1, 1)).astype(np.float32)
            # A Gaussian blob is separable: the outer product of two 1-D profiles is much cheaper
            # than exp() over every pixel.
            blob = np.outer(
                np.exp(-((self._ys - cy) ** 2) / (2 * radius**2)), np.exp(-((self._xs - cx) ** 2) / (2 * radius**2))
            ).astype(np.float32)
            img += blob * amp
        # Noise: a window of a fixed bank at a seeded offset; drawing fresh normals per image
        # would cost more than everything above.
        offset = int(rng.integers(0, self._noise.size - img.size))
        img += self._noise[offset : offset + img.size].reshape(img.shape)
        planes: np.ndarray = np.clip(img, 0, 255).astype(np.uint8)
        return planes

    def batch(self, size: int, index: int = 0) -> np.ndarray:
        """Images ``index*size .. index*size+size-1`` as uint8 ``[size, height, width, 3]``."""
        _check_size(size, index)
        out = np.empty((size, self.height, self.width, CHANNELS), dtype=np.uint8)
        for i in range(size):
            out[i] = self._planes(index * size + i).transpose(1, 2, 0)
        return out


class DirectoryImages:
    """Real PNG/JPEG files from ``path`` (non-recursive), resized to ``height x width``.

    All files are read once, at construction, so that a broken file is reported before a
    benchmark starts (``ConfigError`` naming it). Pass ``k // count`` of the stream picks a
    variant: 0 is the plain resize, later passes are shifted crops of a slightly larger resize,
    mirrored on odd passes.
    """

    def __init__(self, path: Path | str, height: int = 128, width: int = 128) -> None:
        _check_dims(height, width)
        self.path = Path(path)
        self.height = height
        self.width = width
        if not self.path.exists():
            raise ConfigError(f"images directory {self.path} does not exist")
        if not self.path.is_dir():
            raise ConfigError(f"images path {self.path} is not a directory")
        files = sorted(p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ConfigError(f"images directory {self.path} has no {'/'.join(IMAGE_SUFFIXES)} files")
        self.files = files[:MAX_DIRECTORY_IMAGES]
        self._margin_y = max(1, height // 8)
        self._margin_x = max(1, width // 8)
        self._plain: list[np.ndarray] = []
        self._large: list[np.ndarray] = []
        for file in self.files:
            plain, large = self._load(file)
            self._plain.append(plain)
            self._large.append(large)

    def __repr__(self) -> str:
        return f"DirectoryImages({str(self.path)!r}, height={self.height}, width={self.width})"

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, file: Path) -> tuple[np.ndarray, np.ndarray]:
        try:
            with Image.open(file) as opened:
                rgb = opened.convert("RGB")
                plain = rgb.resize((self.width, self.height), Image.Resampling.BILINEAR)
                large = rgb.resize(
                    (self.width + self._margin_x, self.height + self._margin_y), Image.Resampling.BILINEAR
                )
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise ConfigError(f"cannot read image {file}: {exc}") from exc
        return np.asarray(plain, dtype=np.uint8), np.asarray(large, dtype=np.uint8)

    def image(self, k: int) -> np.ndarray:
        """Image number ``k`` of the stream, uint8 ``[height, width, 3]``."""
        n = len(self._plain)
        which, variant = k % n, k // n
        if variant == 0:
            return self._plain[which]
        # Offsets step through the margin with co-prime strides so that successive passes differ.
        dy = (variant * 7) % (self._margin_y + 1)
        dx = (variant * 13) % (self._margin_x + 1)
        crop = self._large[which][dy : dy + self.height, dx : dx + self.width]
        return crop[:, ::-1] if variant % 2 else crop

    def batch(self, size: int, index: int = 0) -> np.ndarray:
        """Images ``index*size .. index*size+size-1`` as uint8 ``[size, height, width, 3]``."""
        _check_size(size, index)
        out = np.empty((size, self.height, self.width, CHANNELS), dtype=np.uint8)
        for i in range(size):
            out[i] = self.image(index * size + i)
        return out


def image_source(images_dir: Path | None, height: int = 128, width: int = 128) -> SyntheticImages | DirectoryImages:
    """``DirectoryImages(images_dir)`` when a directory is given, else ``SyntheticImages`` (seed 0)."""
    if images_dir is None:
        return SyntheticImages(height, width)
    return DirectoryImages(images_dir, height, width)
