"""Run directories: the results store that sweeps write and reports read.

Layout of one run (see docs/architecture.md, "Results")::

    runs/<run-id>/meta.json      config, package versions, git revision, machine, target server,
                                 per-cell status, ``incomplete`` flag and reason, ``error``
    runs/<run-id>/requests.csv   one row per request (bench.store.records columns), appended as it happens
    runs/<run-id>/summary.csv    one row per cell, computed from requests.csv
    runs/<run-id>/capacity.csv   (capacity runs) the answer per cell; probes.csv every probe
    runs/<run-id>/report.html    self-contained report (figures embedded)
    runs/<run-id>/figures/*.png  the same figures as files
    runs/latest                  symlink to the newest run, or a file naming it where symlinks fail

Usage::

    run_dir = new_run_dir(Path("runs"))           # creates runs/20250101-120000-1a2b/ + runs/latest
    write_meta(run_dir, {**collect_environment(), "config": {...}})   # bench.store.provenance
    run = load_run(Path("runs/latest"))           # ResultsError if it is not a run

``meta.json`` is rewritten atomically (temp file + rename) after every cell, so an interrupted
sweep always leaves a readable one. Anything that cannot be collected (no git, no /proc) is
recorded as an ``error`` entry instead of failing the run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import DiskFullError, ResultsError, is_disk_full
from bench.store.atomic import replace_atomically

META_FILE = "meta.json"
REQUESTS_FILE = "requests.csv"
SUMMARY_FILE = "summary.csv"
REPORT_FILE = "report.html"
FIGURES_DIR = "figures"
CELLS_DIR = "cells"
LATEST = "latest"
CAPACITY_FILE = "capacity.csv"
PROBES_FILE = "probes.csv"
META_SCHEMA = 1


@dataclass(frozen=True)
class Run:
    """One run directory and its parsed ``meta.json``."""

    path: Path
    meta: dict[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.meta.get("run_id") or self.path.name)

    @property
    def requests_path(self) -> Path:
        return self.path / REQUESTS_FILE

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def report_path(self) -> Path:
        return self.path / REPORT_FILE

    @property
    def figures_dir(self) -> Path:
        return self.path / FIGURES_DIR

    @property
    def incomplete(self) -> bool:
        return bool(self.meta.get("incomplete"))

    @property
    def incomplete_reason(self) -> str | None:
        return self.meta.get("incomplete_reason")

    @property
    def target(self) -> dict[str, Any]:
        return dict(self.meta.get("target") or {})

    @property
    def server_kind(self) -> str:
        return str(self.target.get("server_kind") or "unknown")

    @property
    def machine_id(self) -> str:
        """What must match for two runs' timings to be comparable: host, CPU model and count."""
        m = self.meta.get("machine") or {}
        return f"{m.get('hostname', '?')} / {m.get('cpu_model', '?')} x{m.get('cpu_count', '?')}"

    @property
    def cells(self) -> list[dict[str, Any]]:
        return list(self.meta.get("cells") or [])


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_run_id(now: dt.datetime | None = None) -> str:
    """``YYYYmmdd-HHMMSS-xxxx`` (UTC, plus 4 random hex digits so parallel runs never collide)."""
    now = now or utc_now()
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def new_run_dir(out: Path, run_id: str | None = None) -> Path:
    """Create ``out/<run-id>/`` (with ``figures/``), write a first ``meta.json``, point ``latest`` at it.

    The first meta.json already says ``incomplete: true`` ("running"): a run only becomes
    complete when its writer says so at the end, so a killed sweep is never mistaken for a
    finished one.
    """
    if out.exists() and not out.is_dir():
        raise ResultsError(f"{out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            rid = run_id or new_run_id()
            run_dir = out / rid
            try:
                run_dir.mkdir()
                break
            except FileExistsError:
                if run_id:
                    raise ResultsError(f"run directory {run_dir} already exists") from None
        else:
            raise ResultsError(f"could not create a new run directory in {out}")
        try:
            (run_dir / FIGURES_DIR).mkdir()
        except OSError:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(f"no space left on {out} for a new run directory") from exc
        raise ResultsError(f"cannot create a run directory in {out}: {exc.strerror or exc}") from exc
    try:
        write_meta(
            run_dir,
            {
                "schema": META_SCHEMA,
                "run_id": rid,
                "created_utc": utc_now().isoformat(timespec="seconds"),
                "incomplete": True,
                "incomplete_reason": "running",
                "error": None,
            },
        )
        set_latest(out, run_dir)
    except ResultsError:
        # A run directory without its meta.json is not a run: leave nothing behind.
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return run_dir


def set_latest(out: Path, run_dir: Path) -> Path:
    """Point ``out/latest`` at ``run_dir``: a relative symlink, or a text file naming it."""
    latest = out / LATEST
    tmp = out / f".{LATEST}.{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        try:
            tmp.symlink_to(run_dir.name, target_is_directory=True)
        except (OSError, NotImplementedError):
            # Filesystems without symlinks (some Windows setups, FAT mounts): a file naming the run.
            tmp.write_text(run_dir.name + "\n", encoding="utf-8")
        if latest.is_dir() and not latest.is_symlink():
            raise ResultsError(f"{latest} is a real directory; cannot point it at {run_dir.name}")
        tmp.replace(latest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise DiskFullError(f"no space left on {out} to update {LATEST}") from exc
        raise ResultsError(f"cannot update {latest}: {exc.strerror or exc}") from exc
    return latest


def resolve_run_path(path: Path) -> Path:
    """Follow ``runs/latest`` (symlink or file naming the run) and accept a runs dir with a latest."""
    if path.is_file() and path.name == LATEST:
        name = path.read_text(encoding="utf-8").strip()
        if not name or "/" in name or "\\" in name:
            raise ResultsError(f"{path} does not name a run")
        return path.parent / name
    if path.is_dir() and not (path / META_FILE).exists() and (path / LATEST).exists():
        return resolve_run_path(path / LATEST)
    if path.is_symlink():
        # Report the run's own directory, so printed paths stay valid when latest moves on.
        return path.resolve()
    return path


def load_run(path: Path) -> Run:
    """Open a run directory (or ``runs/latest``); ResultsError if it is not one.

    A run is a directory with a ``meta.json`` (JSON object). A run whose meta.json is damaged
    but which has a ``requests.csv`` still loads, with the damage recorded in ``meta["error"]``,
    so that a report can show whatever was recorded.
    """
    run_path = resolve_run_path(path)
    if not run_path.exists():
        raise ResultsError(f"{path}: no such run directory")
    if not run_path.is_dir():
        raise ResultsError(f"{path} is not a run directory (it is a file)")
    meta_path = run_path / META_FILE
    has_requests = (run_path / REQUESTS_FILE).is_file()
    if not meta_path.is_file():
        if has_requests:
            return Run(run_path, {"run_id": run_path.name, "incomplete": True, "error": "meta.json is missing"})
        raise ResultsError(f"{path} is not a tfsbench run (no {META_FILE}; expected a run made by tfsbench sweep)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        if has_requests:
            return Run(run_path, {"run_id": run_path.name, "incomplete": True, "error": f"meta.json unreadable: {exc}"})
        raise ResultsError(f"{path} is not a tfsbench run ({META_FILE} unreadable: {exc})") from exc
    return Run(run_path, meta)


def read_meta(run_dir: Path) -> dict[str, Any]:
    return dict(load_run(run_dir).meta)


def write_meta(run_dir: Path, meta: dict[str, Any]) -> None:
    """Write ``meta.json`` atomically: readers see the old or the new file, never half of one.

    On a full disk the temp file is removed and, when the new text fits in the blocks the old
    file already holds, meta.json is rewritten in place in compact form (overwriting allocated
    blocks needs no free space), so a run that filled the disk can still say so. Otherwise
    DiskFullError, with the old meta.json untouched.
    """
    path = run_dir / META_FILE
    text = json.dumps(meta, indent=2, sort_keys=False, default=str) + "\n"
    try:
        replace_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    except DiskFullError:
        if not _rewrite_in_place(path, meta):
            raise


def _rewrite_in_place(path: Path, meta: dict[str, Any]) -> bool:
    """Overwrite ``path`` with compact JSON if it is no longer than the file is now; True if done."""
    data = (json.dumps(meta, separators=(",", ":"), default=str) + "\n").encode("utf-8")
    try:
        if not path.is_file() or len(data) > path.stat().st_size:
            return False
        with path.open("r+b") as f:
            f.write(data)
            f.truncate()
    except OSError:
        return False
    return True


def update_meta(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into meta.json and write it back; returns the new dict."""
    meta = read_meta(run_dir)
    meta.update(fields)
    write_meta(run_dir, meta)
    return meta


def cell_name(batch: int, encoding: str) -> str:
    """The label of one grid cell, as written in requests.csv's ``cell`` column: ``b16-row-orjson``."""
    return f"b{batch}-{encoding}"
