"""``tfsbench codecs``: the CSV contract, measured values that match the encoders, bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from bench.cli import main
from bench.commands.codecs import COLUMNS, format_targets, measure
from bench.payloads.encodings import get_encoding
from bench.payloads.images import SyntheticImages

CONTRACT = [
    "batch",
    "encoding",
    "payload_bytes",
    "bytes_per_value",
    "encode_us",
    "decode_us",
    "vs_row_json",
    "vs_memcpy",
]


def test_cli_writes_the_contract_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "codecs.csv"
    names = ["row-orjson", "row-fast", "row-orjson-gzip", "b64-png", "b64-jpeg"]
    code = main(["codecs", "--batch-sizes", "1,2", "--encodings", ",".join(names), "--repeats", "2", "--out", str(out)])
    assert code == 0
    with out.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == CONTRACT
        rows = list(reader)
    assert [(int(r["batch"]), r["encoding"]) for r in rows] == [(b, n) for b in (1, 2) for n in names]
    source = SyntheticImages()
    for row in rows:
        batch = source.batch(int(row["batch"]), index=0)
        body = get_encoding(row["encoding"]).encode(batch)
        assert int(row["payload_bytes"]) == len(body)
        assert float(row["bytes_per_value"]) == pytest.approx(len(body) / batch.size, rel=1e-5)
        for column in ("encode_us", "decode_us", "vs_row_json", "vs_memcpy"):
            assert float(row[column]) > 0, column
    printed = capsys.readouterr()
    assert "row-orjson-gzip" in printed.out
    assert "happens inside the TensorFlow graph" in printed.out  # the b64 decode footnote
    assert "cells measured" in printed.err
    assert str(out) in printed.out


def test_measure_ratios_are_consistent() -> None:
    encodings = [get_encoding(n) for n in ("row-json", "row-orjson", "row-fast")]
    rows = measure([2], encodings, SyntheticImages(32, 32), repeats=3)
    assert tuple(rows[0].__dataclass_fields__) == COLUMNS == tuple(CONTRACT)
    by_name = {r.encoding: r for r in rows}
    assert by_name["row-json"].vs_row_json == 1.0
    for row in rows:
        # vs_row_json = reference encode / this encode; vs_memcpy = this encode / memcpy floor
        assert row.vs_row_json == pytest.approx(by_name["row-json"].encode_us / row.encode_us)
        memcpy_us = row.encode_us / row.vs_memcpy
        assert memcpy_us == pytest.approx(by_name["row-json"].encode_us / by_name["row-json"].vs_memcpy)
    # row-json is not listed here but still the reference of every row's ratio
    only_fast = measure([2], [get_encoding("row-fast")], SyntheticImages(32, 32), repeats=3)
    assert [r.encoding for r in only_fast] == ["row-fast"]
    assert only_fast[0].vs_row_json > 0
    assert "row-fast is" in format_targets(rows)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--encodings", "row-orjson,bogus"], "unknown encoding(s) bogus (valid: row-orjson"),
        (["--batch-sizes", "0"], "'0' must be a positive integer"),
        (["--batch-sizes", "1,x"], "'x' is not an integer"),
        (["--images", "no/such/dir"], "images directory no/such/dir does not exist"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code: str | int | None
    try:
        code = main(["codecs", "--repeats", "1", *argv])
    except SystemExit as exc:  # argparse's own validation
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_out_that_is_a_directory_is_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["codecs", "--batch-sizes", "1", "--encodings", "row-fast", "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_float32_bodies_of_the_same_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "codecs.csv"
    common = ["codecs", "--batch-sizes", "2", "--image-size", "16", "--repeats", "1", "--encodings"]
    assert main([*common, "row-orjson,row-fast", "--input-dtype", "float32", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "codecs: row-fast cannot send a float32 input: left out" in captured.err
    assert "as float32 in [0, 1]" in captured.out
    (row,) = list(csv.DictReader(out.open()))
    images = SyntheticImages(16, 16).batch(2)
    body = get_encoding("row-orjson").encode({"examples": (images / 255.0).astype("float32")})
    assert int(row["payload_bytes"]) == len(body)  # the server-side decode check passed on it too
    assert float(row["bytes_per_value"]) > 2 * len(get_encoding("row-orjson").encode(images)) / images.size
    assert main([*common, "row-fast", "--input-dtype", "float32"]) == 2
    assert "none of --encodings can send a float32 image input" in capsys.readouterr().err
