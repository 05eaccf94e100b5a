"""Per-request records: one CSV row per request, written as it completes, summarized afterwards.

The records are the single source of truth for reports. Columns (``requests.csv``), in order::

    t_start         unix seconds; in open-model runs the *intended* send time
    latency_ms      from t_start to the last response byte (so it includes any late start)
    status          HTTP status; 0 when no response arrived (connection error, timeout)
    batch           images in the request
    encoding        bench.payloads.encodings encoding name
    payload_bytes   request body size as sent (after gzip for row-orjson-gzip)
    encode_us       client-side encode time of this body (pre-encoded pool: the pool's figure)
    response_bytes  response body size
    error           "" on success, else the failure message (the server's own text where it sent one)
    cell            label of the sweep cell / Locust run the request belongs to
    send_lag_ms     (extra) ms: how late the send started after its intended time; 0 in the closed
                    model. ``latency_ms - send_lag_ms`` is the uncorrected (coordinated
                    omission) latency, kept for comparison as wrk2 does.
    lag_cause       (extra) why the send was as late as it was, from what its user knew then:
                    ``busy`` (it was still waiting on its previous reply, which the server or the
                    network held up), ``idle`` (it was free, or its reply sat in the generator's
                    own event loop: the load generator was behind); "" in the closed model.
                    Decided per row by the process that sent it (bench.scenario.schedule.LagAccount),
                    so rows from any process or machine mean the same; the rule that makes a
                    send late is bench.store.lateness.

Files written before an extra column existed read with its default (0.0, "").

Usage::

    with RecordWriter(Path("runs/x/requests.csv")) as writer:   # appends; header once
        writer.write(RequestRecord(t_start=..., latency_ms=12.5, ...))   # one flushed row
    df = read_records(Path("runs/x/requests.csv"))

Rows are flushed one by one, so a run that is killed keeps every completed request; a last row
cut off mid-write is dropped by :func:`read_records` instead of poisoning the file.

Summaries are ``bench.store.summary``; what a load generator knows beyond its rows is in its
side-car (``bench.store.load_stats``).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from bench.errors import ResultsError

COLUMNS: tuple[str, ...] = (
    "t_start",
    "latency_ms",
    "status",
    "batch",
    "encoding",
    "payload_bytes",
    "encode_us",
    "response_bytes",
    "error",
    "cell",
)
EXTRA_COLUMNS: tuple[str, ...] = ("send_lag_ms", "lag_cause")
ALL_COLUMNS: tuple[str, ...] = COLUMNS + EXTRA_COLUMNS

_INT_COLUMNS = ("status", "batch", "payload_bytes", "response_bytes")
_FLOAT_COLUMNS = ("t_start", "latency_ms", "encode_us", "send_lag_ms")
_STR_COLUMNS = ("encoding", "error", "cell", "lag_cause")


@dataclass(frozen=True)
class RequestRecord:
    """One completed request (units in the field names' suffixes; ``t_start`` is unix seconds)."""

    t_start: float
    latency_ms: float
    status: int
    batch: int
    encoding: str
    payload_bytes: int
    encode_us: float
    response_bytes: int
    error: str = ""
    cell: str = ""
    send_lag_ms: float = 0.0
    lag_cause: str = ""

    def to_row(self) -> list[str]:
        """The CSV row, in :data:`ALL_COLUMNS` order; floats keep microsecond resolution."""
        return [
            f"{self.t_start:.6f}",
            f"{self.latency_ms:.3f}",
            str(self.status),
            str(self.batch),
            self.encoding,
            str(self.payload_bytes),
            f"{self.encode_us:.1f}",
            str(self.response_bytes),
            self.error,
            self.cell,
            f"{self.send_lag_ms:.3f}",
            self.lag_cause,
        ]

    @classmethod
    def from_row(cls, row: Sequence[str] | Mapping[str, Any]) -> RequestRecord:
        """Parse a CSV row (a list in column order, or a mapping by column name)."""
        if not isinstance(row, Mapping):
            row = dict(zip(ALL_COLUMNS, row, strict=False))
        try:
            return cls(
                t_start=float(row["t_start"]),
                latency_ms=float(row["latency_ms"]),
                status=int(row["status"]),
                batch=int(row["batch"]),
                encoding=str(row["encoding"]),
                payload_bytes=int(row["payload_bytes"]),
                encode_us=float(row["encode_us"]),
                response_bytes=int(row["response_bytes"]),
                error=_text(row.get("error")),
                cell=_text(row.get("cell")),
                send_lag_ms=float(row.get("send_lag_ms") or 0.0),
                lag_cause=_text(row.get("lag_cause")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ResultsError(f"not a request record: {row!r} ({exc})") from exc

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.error


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value)


class RecordWriter:
    """Append :class:`RequestRecord` rows to a CSV file, one flushed line per request.

    The header is written only when the file is new or empty, so several runs (or a resumed
    run) can append to one file. Each row goes out in a single ``write`` + ``flush`` so a
    killed process leaves at most one partial last line, which :func:`read_records` skips.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.rows_written = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file: IO[str] | None = self.path.open("a", newline="", encoding="utf-8")
        except OSError as exc:
            raise ResultsError(f"cannot write records to {self.path}: {exc.strerror or exc}") from exc
        if self._file.tell() == 0:
            self._write_line(ALL_COLUMNS)

    def _write_line(self, values: Sequence[str]) -> None:
        assert self._file is not None
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(values)
        self._file.write(buffer.getvalue())
        self._file.flush()

    def write(self, record: RequestRecord) -> None:
        """Append one row and flush it to the OS."""
        if self._file is None:
            raise ResultsError(f"record writer for {self.path} is closed")
        self._write_line(record.to_row())
        self.rows_written += 1

    def write_many(self, records: Iterable[RequestRecord]) -> None:
        for record in records:
            self.write(record)

    @property
    def closed(self) -> bool:
        return self._file is None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_records(paths: Path | str | Iterable[Path | str]) -> pd.DataFrame:
    """Read one or more records files into one DataFrame with :data:`ALL_COLUMNS`.

    Files without the extra columns get their defaults (``send_lag_ms`` 0, ``lag_cause`` ""). A row
    cut off by a killed writer (missing fields) is dropped. Raises ResultsError for a missing
    file or one that is not a records file.
    """
    path_list = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    frames = [_read_one(p) for p in path_list]
    if not frames:
        return _empty_frame()
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return frame


def _empty_frame() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in ALL_COLUMNS})
    for c in _INT_COLUMNS:
        frame[c] = frame[c].astype("int64")
    for c in _STR_COLUMNS:
        frame[c] = frame[c].astype("object")
    return frame


def _read_one(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype={c: "string" for c in _STR_COLUMNS}, keep_default_na=False)
    except FileNotFoundError as exc:
        raise ResultsError(f"no records file at {path}") from exc
    except pd.errors.EmptyDataError:
        return _empty_frame()
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise ResultsError(f"cannot read records from {path}: {exc}") from exc
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ResultsError(f"{path} is not a records file (missing columns: {', '.join(missing)})")
    if "send_lag_ms" not in frame.columns:
        frame["send_lag_ms"] = 0.0
    if "lag_cause" not in frame.columns:
        frame["lag_cause"] = ""
    # A partial last line (writer killed mid-row) parses with empty numeric fields.
    for c in (*_INT_COLUMNS, *_FLOAT_COLUMNS):
        frame[c] = pd.to_numeric(frame[c], errors="coerce")
    complete = frame[[*_INT_COLUMNS, "t_start", "latency_ms"]].notna().all(axis=1)
    frame = frame.loc[complete].copy()
    frame["encode_us"] = frame["encode_us"].fillna(0.0)
    frame["send_lag_ms"] = frame["send_lag_ms"].fillna(0.0)
    for c in _INT_COLUMNS:
        frame[c] = frame[c].astype("int64")
    for c in _STR_COLUMNS:
        frame[c] = frame[c].fillna("").astype(str)
    return frame[list(ALL_COLUMNS)].reset_index(drop=True)


def merge_records(paths: Iterable[Path | str], out_path: Path | str) -> int:
    """Merge records files into ``out_path`` (sorted by ``t_start``); returns the rows written.

    Rows already in ``out_path`` are kept. The merged file is written next to the target and
    renamed into place, and its row count is checked against the inputs, so a failure never
    loses rows: the inputs are left untouched either way (callers delete them afterwards).
    """
    out = Path(out_path)
    sources = [Path(p) for p in paths if Path(p) != out]
    inputs = ([out] if out.exists() and out.stat().st_size > 0 else []) + sources
    frame = read_records(inputs) if inputs else _empty_frame()
    frame = frame.sort_values("t_start", kind="stable").reset_index(drop=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with RecordWriter(tmp) as writer:
            for row in frame.itertuples(index=False):
                writer.write(RequestRecord(*row))
        written = len(read_records(tmp))
        if written != len(frame):
            raise ResultsError(f"merge into {out} wrote {written} rows, expected {len(frame)}")
        tmp.replace(out)
    except OSError as exc:
        raise ResultsError(f"cannot merge records into {out}: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return len(frame)
