"""tfsbench inspect against the real embedded server serving the reference model."""

from __future__ import annotations

import json

import pytest

from bench.cli import main
from bench.payloads.encodings import get_encoding
from bench.payloads.images import SyntheticImages


def test_inspect_json_lists_signatures_encodings_and_bytes(embedded_server, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--host", embedded_server.url, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["versions"] == [{"version": "1", "state": "AVAILABLE"}]
    default, by_bytes = doc["signatures"]["serving_default"], doc["signatures"]["serving_bytes"]
    assert default["inputs"] == [{"name": "examples", "dtype": "uint8", "shape": "[-1,128,128,3]"}]
    assert {"name": "probabilities", "dtype": "float32", "shape": "[-1,10]"} in default["outputs"]
    assert "row-fast" in default["encodings"]
    assert "b64-png" not in default["encodings"]
    assert by_bytes["encodings"] == ["b64-png", "b64-jpeg", "grpc-bytes-png", "grpc-bytes-jpeg"]
    assert "grpc-tensor-content" in default["encodings"]
    images = SyntheticImages(128, 128)
    for batch in (1, 16, 64):
        want = len(get_encoding("row-orjson").encode(images.batch(batch)))
        assert default["payload"]["bytes"]["row-orjson"][str(batch)] == want
    assert by_bytes["payload"]["bytes"]["b64-png"]["1"] == len(get_encoding("b64-png").encode(images.batch(1)))


def test_inspect_table_fits_one_screen(embedded_server, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--host", embedded_server.url, "--signature-name", "serving_default"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"model 'classifier' at {embedded_server.url}: versions 1 AVAILABLE"
    assert "  input  examples       uint8    [-1,128,128,3]" in lines
    assert len(lines) < 40
    assert max(len(line) for line in lines) <= 120
    assert main(["inspect", "--host", embedded_server.url, "--signature-name", "nope"]) == 2
    assert "has no signature 'nope' (has: serving_bytes, serving_default)" in capsys.readouterr().err
