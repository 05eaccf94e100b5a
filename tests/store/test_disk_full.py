"""A full disk costs the row that did not fit, never the file's shape or a stray temp file.

The disk is made full for real in a child process: RLIMIT_FSIZE (EFBIG past the limit, with
SIGXFSZ ignored) behaves towards a writer as a full disk does, on any machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from bench.store import runs
from bench.store.records import RecordWriter, RequestRecord, read_records


def _record(i: int) -> RequestRecord:
    return RequestRecord(
        t_start=1_700_000_000.0 + i, latency_ms=1.5, status=200, batch=1, encoding="row-orjson",
        payload_bytes=100, encode_us=3.0, response_bytes=20, cell="b1-row-orjson",
    )  # fmt: skip


def _run_limited(script: str, limit_bytes: int) -> subprocess.CompletedProcess[str]:
    prelude = textwrap.dedent(
        f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit_bytes}, {limit_bytes}))
        """
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script)], capture_output=True, text=True, timeout=120
    )


def test_records_end_with_the_last_whole_row_when_the_disk_fills(tmp_path: Path) -> None:
    path = tmp_path / "requests.csv"
    proc = _run_limited(
        f"""
        from pathlib import Path
        from bench.errors import DiskFullError
        from tests.store.test_disk_full import _record
        from bench.store.records import RecordWriter
        writer = RecordWriter(Path({str(path)!r}))
        try:
            for i in range(100_000):
                writer.write(_record(i))
        except DiskFullError as exc:
            print(writer.rows_written)
            print(exc)
        """,
        limit_bytes=10_000,
    )
    assert proc.returncode == 0, proc.stderr
    written, message = proc.stdout.splitlines()
    assert message.startswith(f"no space left on {tmp_path}: {written} rows kept")
    data = path.read_bytes()
    assert data.endswith(b"\n")
    assert 9_000 < len(data) <= 10_000  # filled up to the limit, the torn row cut off
    assert len(read_records(path)) == int(written) == data.count(b"\n") - 1


def test_a_torn_last_row_is_cut_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "requests.csv"
    with RecordWriter(path) as writer:
        writer.write_many(_record(i) for i in range(3))
    whole = path.read_bytes()
    path.write_bytes(whole + b"1700000009.000000,2.5,20")  # a writer killed mid-row
    with RecordWriter(path) as writer:
        writer.write(_record(3))
    assert path.read_bytes() == whole + b",".join(f.encode() for f in _record(3).to_row()) + b"\n"
    assert list(read_records(path)["t_start"]) == [1_700_000_000.0 + i for i in range(4)]


def test_meta_json_says_incomplete_in_place_when_no_new_file_fits(tmp_path: Path) -> None:
    run_dir = runs.new_run_dir(tmp_path / "runs")
    cells = [{"cell": f"b{b}-row-orjson", "status": "done", "records": 100, "error": None} for b in range(60)]
    runs.update_meta(run_dir, config={"padding": "x" * 4000}, cells=cells)
    size = (run_dir / runs.META_FILE).stat().st_size
    # Below the current size: a new meta.json cannot be written, the old one can be overwritten.
    proc = _run_limited(
        f"""
        from pathlib import Path
        from bench.store import runs
        runs.update_meta(Path({str(run_dir)!r}), incomplete_reason="no space left")
        """,
        limit_bytes=size - 100,
    )
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((run_dir / runs.META_FILE).read_text(encoding="utf-8"))
    assert meta["incomplete_reason"] == "no space left"
    assert meta["config"]["padding"] == "x" * 4000  # nothing else lost
    assert meta["cells"] == cells
    assert sorted(p.name for p in run_dir.iterdir()) == [runs.FIGURES_DIR, runs.META_FILE]  # no temp file


def test_no_run_directory_is_left_without_its_meta_json(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    out.mkdir()
    proc = _run_limited(
        f"""
        from pathlib import Path
        from bench.errors import DiskFullError
        from bench.store import runs
        try:
            runs.new_run_dir(Path({str(out)!r}))
        except DiskFullError as exc:
            print(exc)
        """,
        limit_bytes=0,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"no space left on {out}")
    assert list(out.iterdir()) == []
