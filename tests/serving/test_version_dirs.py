"""Version directories as tensorflow/serving finds them: any child whose name parses as a
non-negative integer, loaded from its real name, reported by its value."""

from __future__ import annotations

import json
import logging
import shutil
import urllib.request

import pytest

from bench.errors import ModelError
from bench.serving.model_store import parse_version, scan_versions
from bench.serving.server import EmbeddedServer, ServerOptions


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("1", 1),
        ("00000123", 123),
        ("0", 0),
        ("+7", 7),
        (" 42 ", 42),
        ("9223372036854775807", 2**63 - 1),
        ("9223372036854775808", None),  # beyond int64
        ("-3", None),  # parses upstream, but a negative version is not served
        ("1e3", None),
        ("0x10", None),
        ("v1", None),
        ("", None),
        ("+", None),
        ("١٢", None),  # Arabic-Indic digits are digits to Python, not to absl
        (".tmp-1-abc", None),
    ],
)
def test_parse_version_reads_names_as_simple_atoi_does(name: str, version: int | None) -> None:
    assert parse_version(name) == version


def test_scan_finds_every_numeric_child_and_the_later_duplicate_wins(tmp_path, caplog) -> None:
    for name in ("00000123", "7", "0007", "x1", ".tmp-9-abc"):
        (tmp_path / name).mkdir()
    (tmp_path / "9").write_text("a file counts as well, and will fail to load")
    with caplog.at_level(logging.WARNING, logger="tfsbench.serve"):
        assert scan_versions(tmp_path) == {7: "7", 9: "9", 123: "00000123"}
    assert (
        "Duplicate version directories detected. Version 7 will be loaded from 7, 0007 will be ignored." in caplog.text
    )


def test_a_zero_padded_version_is_served_and_reported_by_value(model_base_path, tmp_path) -> None:
    base = tmp_path / "padded"
    shutil.copytree(model_base_path / "1", base / "00000042")
    with EmbeddedServer(model_base_path=base, model_name="padded") as server:
        with urllib.request.urlopen(server.url + "/v1/models/padded/versions/42/metadata", timeout=30) as reply:
            assert json.loads(reply.read())["model_spec"]["version"] == "42"
        with urllib.request.urlopen(server.url + "/v1/models/padded", timeout=30) as reply:
            assert [row["version"] for row in json.loads(reply.read())["model_version_status"]] == ["42"]


def test_a_version_that_cannot_load_reports_upstream_s_code_and_text(model_base_path, tmp_path) -> None:
    from bench.serving.model_config import ModelConfig
    from bench.serving.model_store import ModelStore

    (tmp_path / "empty" / "3").mkdir(parents=True)
    shutil.copytree(model_base_path / "1", tmp_path / "tagged" / "1")
    store = ModelStore([ModelConfig("empty", tmp_path / "empty")], poll_wait_s=0)
    store.poll_once()
    (row,) = store.status("empty")
    assert (row.version, row.state, row.error_code) == (3, "END", "NOT_FOUND")
    assert row.error_message == (
        f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {tmp_path / 'empty' / '3'}"
    )
    options = ServerOptions(models=(ModelConfig("tagged", tmp_path / "tagged"),), saved_model_tags=("serve", "gpu"))
    with pytest.raises(ModelError, match=r"Could not find meta graph def matching supplied tags: \{ serve gpu \}"):
        EmbeddedServer(options=options).start()
