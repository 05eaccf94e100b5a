"""tfsbench sweep: bad input gives one clear line and a non-zero exit, and creates no run."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sweep(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", "sweep", "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        pytest.param(["--encodings", "row-xml"], 2, "row-xml", id="unknown-encoding"),
        pytest.param(["--batch-sizes", "1,0"], 2, "'0' must be a positive integer", id="batch-size-0"),
        pytest.param(["--rate", "10"], 2, "--arrival poisson", id="rate-without-open-model"),
        pytest.param(["--arrival", "poisson"], 2, "needs --rate", id="open-model-without-rate"),
        pytest.param([], 1, "cannot reach", id="unreachable-host"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    out = tmp_path / "runs"
    proc = sweep(out, "--host", f"http://127.0.0.1:{closed_port()}", "--duration", "1s", *args)
    assert proc.returncode == code, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    # One error line, last (argparse prints its usage above it).
    assert [line for line in lines if "error:" in line] == [lines[-1]], proc.stderr
    assert message in lines[-1]
    assert "Traceback" not in proc.stderr
    assert not out.exists()  # nothing half-made to clean up


def test_host_must_be_a_url(tmp_path: Path) -> None:
    proc = sweep(tmp_path / "runs", "--host", "127.0.0.1:8501")
    assert proc.returncode == 2
    assert "is not an http:// or https:// URL" in proc.stderr
