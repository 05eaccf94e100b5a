"""serving_bytes reads an image's dimensions from its header and refuses one above the export's
``max_image_pixels`` before decoding it: a small file that would decode to gigabytes gets a
clean INVALID_ARGUMENT (HTTP 400) and costs the server no memory."""

from __future__ import annotations

import base64
import http.client
import io
import json
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from bench.serving.server import EmbeddedServer
from export import export_model
from tests.helpers.serve_process import ServeProcess

LIMIT_MESSAGE = "pixels is larger than this model decodes"


def encoded(width: int, height: int, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (40, 80, 120)).save(out, format=fmt)
    return out.getvalue()


def huge_png(side: int) -> bytes:
    """A valid 1-bit grayscale PNG of side x side pixels, compressed to ~1 MB (decoded as RGB:
    3 bytes a pixel)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" + b"\0" * ((side + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def predict_bytes(port: int, image: bytes) -> tuple[int, dict]:
    body = json.dumps({"signature_name": "serving_bytes", "instances": [{"b64": base64.b64encode(image).decode()}]})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", "/v1/models/classifier:predict", body=body)
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def small_limit_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("limited")
    export_model(out, model_name="classifier", version=1, size="tiny", max_image_pixels=64 * 64)
    return out / "classifier"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP"])
def test_images_above_the_export_limit_get_invalid_argument(small_limit_model, fmt) -> None:
    with EmbeddedServer(model_base_path=small_limit_model, model_name="classifier") as server:
        status, doc = predict_bytes(server.port, encoded(64, 64, fmt))
        assert status == 200, doc
        status, doc = predict_bytes(server.port, encoded(65, 64, fmt))
        assert status == 400, doc
        assert f"Image of 65x64 {LIMIT_MESSAGE}: at most 4096 pixels" in doc["error"]
        status, doc = predict_bytes(server.port, encoded(4097, 1, fmt))  # a thin image past the limit
        assert status == 400, doc


def test_a_20000_pixel_square_png_is_refused_without_decoding(model_base_path, tmp_path) -> None:
    image = huge_png(20000)
    assert len(image) < 2_000_000  # a small body that would decode to 1.2 GB
    with ServeProcess(model_base_path, log_path=tmp_path / "serve.log") as served:
        status, doc = predict_bytes(served.port, encoded(128, 128, "PNG"))
        assert status == 200, doc  # the signature has run once: its memory is counted in `before`
        before = served.rss_bytes()
        for _ in range(3):
            status, doc = predict_bytes(served.port, image)
            assert status == 400, doc
            assert f"Image of 20000x20000 {LIMIT_MESSAGE}: at most 16777216 pixels" in doc["error"]
        grown = served.rss_bytes() - before
        assert grown < 200 * 1024 * 1024, f"RSS grew by {grown / 1e6:.0f} MB"


def test_export_refuses_a_bad_limit(tmp_path) -> None:
    from bench.errors import ConfigError

    with pytest.raises(ConfigError, match="max-image-pixels"):
        export_model(tmp_path, max_image_pixels=0)
