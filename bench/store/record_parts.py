"""The records files of one cell's Locust run, where a sweep or capacity probe finds them.

One Locust process (the master when there are workers) writes the cell's ``records.csv``:
workers send their rows to the master over Locust's messages (bench.scenario.relay), so no
per-process part files exist. Runs made before that can still hold ``records.<pid>.csv`` parts
beside it; they are read as rows of the same cell.
"""

from __future__ import annotations

from pathlib import Path


def cell_record_files(cell_dir: Path) -> list[Path]:
    """Records files one cell's Locust run wrote (``records.csv``, and parts from older runs)."""
    return sorted(p for p in cell_dir.glob("records*.csv") if p.is_file())
