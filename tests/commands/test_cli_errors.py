"""tfsbench's command line on bad input: the sub-command's usage in one line, one error line, a hint
where one helps, exit 2 — run as a user runs it (a subprocess), never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bench.payloads.encodings import ENCODING_NAMES


def tfsbench(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in proc.stderr, proc.stderr
    return [line for line in proc.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("args", "error", "hint"),
    [
        pytest.param(
            ["sweep", "--batch-size", "16"],
            "tfsbench sweep: error: unrecognized arguments: --batch-size 16",
            "hint: did you mean --batch-sizes?",
            id="abbreviation-is-not-taken",
        ),
        pytest.param(
            ["serve", "--rest-api-port", "8501"],
            "tfsbench serve: error: unrecognized arguments: --rest-api-port 8501",
            "hint: serve takes tensorflow_model_server's flags: --rest_api_port",
            id="serve-dash-flag",
        ),
        pytest.param(
            ["sweep", "--batch_sizes", "1"],
            "tfsbench sweep: error: unrecognized arguments: --batch_sizes 1",
            "hint: did you mean --batch-sizes?",
            id="sweep-underscore-flag",
        ),
        pytest.param(
            ["sweep", "--batch-sizes", "0"],
            "tfsbench sweep: error: argument --batch-sizes: '0' must be a positive integer",
            None,
            id="batch-size-0",
        ),
        pytest.param(
            ["capacity", "--host", "http://127.0.0.1:9", "--slo", "p99"],
            "tfsbench capacity: error: argument --slo: 'p99' is not an SLO (expected e.g. p99<100ms or p95<0.5s)",
            None,
            id="bad-slo",
        ),
    ],
)
def test_sub_command_error_is_its_usage_and_one_line(args: list[str], error: str, hint: str | None) -> None:
    proc = tfsbench(*args)
    assert proc.returncode == 2
    lines = stderr_lines(proc)
    assert lines[0].startswith(f"usage: tfsbench {args[0]} "), lines
    assert lines[1:] == [error, *([hint] if hint else [])]


def test_top_level_error_keeps_the_top_level_usage() -> None:
    proc = tfsbench("swep")
    assert proc.returncode == 2
    lines = stderr_lines(proc)
    assert lines[0] == "usage: tfsbench [-h] [--version] COMMAND ..."
    assert lines[1].startswith("tfsbench: error: argument COMMAND: invalid choice: 'swep'")
    assert len(lines) == 2


def test_host_with_a_model_path_names_the_root(tmp_path: Path) -> None:
    port = closed_port()
    proc = tfsbench("sweep", "--host", f"http://127.0.0.1:{port}/v1/models/classifier", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert stderr_lines(proc) == [
        f"tfsbench sweep: error: 'http://127.0.0.1:{port}/v1/models/classifier' has a path: give the server's "
        f"root, e.g. http://127.0.0.1:{port} (tfsbench adds /v1/models/NAME; --model-name and --model-version "
        "choose the model)"
    ]
    assert not any(tmp_path.iterdir())


def test_connection_refused_says_how_to_start_a_server(tmp_path: Path) -> None:
    port = closed_port()
    proc = tfsbench("sweep", "--host", f"http://127.0.0.1:{port}", "--out", str(tmp_path))
    assert proc.returncode == 1
    (line,) = stderr_lines(proc)
    assert "Connection refused" in line
    assert line.endswith(
        f"(is a server running? tfsbench serve --rest_api_port {port} --model_name classifier "
        "--model_base_path models/classifier)"
    )


def test_sweep_help_lists_encodings_and_defaults() -> None:
    proc = tfsbench("sweep", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for name in ENCODING_NAMES:
        assert f" {name}," in text or f" {name} " in text, name
    assert "(default row-orjson)" in text
    assert "(default 1,4,16)" in text
