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
    protocol        (extra) ``rest`` or ``grpc``: how the request went (the encoding decides it). A gRPC
                    request's ``status`` is the HTTP status tensorflow/serving's REST layer maps its
                    gRPC code to (INVALID_ARGUMENT -> 400, NOT_FOUND -> 404, ...), and its ``error``
                    starts with the gRPC code name, so both protocols' rows read the same way.
    worker          (extra) the load-generating process that sent it, ``host:pid``; rows from a
                    Locust worker reach the master's file over Locust's own messages
                    (bench.scenario.relay), so per-worker verdicts read them from here.
    target          (extra) the replica that answered, ``host:port`` of the URL its user sent to
                    (``--host URL1,URL2``: bench.target.replicas); behind one load-balanced URL,
                    that URL's ``host:port``; "" in files written before the column existed.

Files written before an extra column existed read with its default (``send_lag_ms`` 0.0,
``protocol`` "rest", the others "").

Usage::

    with RecordWriter(Path("runs/x/requests.csv")) as writer:   # appends; header once
        writer.write(RequestRecord(t_start=..., latency_ms=12.5, ...))   # one flushed row
    df = read_records(Path("runs/x/requests.csv"))

Rows go to the OS one by one, each in one write, so a run that is killed keeps every completed
request; a last row cut off mid-write is dropped by :func:`read_records` instead of poisoning the
file, and cut off by the next writer that opens it. A full disk costs the row that did not fit,
never the file's shape (:class:`RecordWriter`).

Summaries are ``bench.store.summary``; what a load generator knows beyond its rows is in its
side-car (``bench.store.load_stats``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import DiskFullError, ResultsError, is_disk_full

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
# Columns added after the first files were written: a file without one reads with its default.
# A new optional column goes here, in _KINDS and in RequestRecord; nothing else reads the header.
DEFAULT_PROTOCOL = "rest"  # what records from before the protocol column were
OPTIONAL_DEFAULTS: dict[str, float | str] = {
    "send_lag_ms": 0.0,
    "lag_cause": "",
    "protocol": DEFAULT_PROTOCOL,
    "worker": "",
    "target": "",
}
EXTRA_COLUMNS: tuple[str, ...] = tuple(OPTIONAL_DEFAULTS)
ALL_COLUMNS: tuple[str, ...] = COLUMNS + EXTRA_COLUMNS

# What each column holds: "int" and "float" are parsed as numbers (a row missing one of
# _COMPLETE is a torn last line), "str" as text ("" when empty, or the column's non-empty default).
_KINDS: dict[str, str] = {
    "t_start": "float",
    "latency_ms": "float",
    "status": "int",
    "batch": "int",
    "encoding": "str",
    "payload_bytes": "int",
    "encode_us": "float",
    "response_bytes": "int",
    "error": "str",
    "cell": "str",
    "send_lag_ms": "float",
    "lag_cause": "str",
    "protocol": "str",
    "worker": "str",
    "target": "str",
}
_INT_COLUMNS = tuple(c for c in ALL_COLUMNS if _KINDS[c] == "int")
_FLOAT_COLUMNS = tuple(c for c in ALL_COLUMNS if _KINDS[c] == "float")
_STR_COLUMNS = tuple(c for c in ALL_COLUMNS if _KINDS[c] == "str")
# A row is whole when these parsed: a writer killed mid-row leaves the last fields empty.
_COMPLETE = (*_INT_COLUMNS, "t_start", "latency_ms")
# Rows per chunk of :func:`iter_records`: about 100 MB of parsed chunk, whatever the file's size.
CHUNK_ROWS = 250_000


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
    protocol: str = DEFAULT_PROTOCOL
    worker: str = ""
    target: str = ""

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
            self.protocol,
            self.worker,
            self.target,
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
                protocol=_text(row.get("protocol")) or DEFAULT_PROTOCOL,
                worker=_text(row.get("worker")),
                target=_text(row.get("target")),
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
    """Append :class:`RequestRecord` rows to a CSV file, each row whole or not at all.

    The header is written only when the file is new or empty, so several runs (or a resumed
    run) can append to one file. Each row goes to the OS in one ``write`` (no buffering in
    between), so a killed process leaves at most one partial last line; opening the file again
    cuts such a torn tail off before appending. When the disk is full (or a file-size limit is
    reached) the row that did not fit is truncated away, the file ends with the last whole row,
    and :class:`~bench.errors.DiskFullError` says how many rows it keeps.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.rows_written = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._size = cut_torn_tail(self.path, self._fd)
            if self._size == 0:
                self._write_line(ALL_COLUMNS)
        except OSError as exc:
            self.close()
            if is_disk_full(exc):
                raise DiskFullError(f"no space left on {self.path.parent} for {self.path.name}") from exc
            raise ResultsError(f"cannot write records to {self.path}: {exc.strerror or exc}") from exc

    def _write_line(self, values: Sequence[str]) -> None:
        self._write_lines([values])

    def _write_lines(self, rows: Iterable[Sequence[str]]) -> None:
        assert self._fd is not None
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        data = buffer.getvalue().encode("utf-8")
        view = memoryview(data)
        try:
            while view:  # a short write (the disk filling up mid-row) is followed by the error
                view = view[os.write(self._fd, view) :]
        except OSError:
            # Whole rows only: cut what got out of this one, keep every row before it.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise
        self._size += len(data)

    def write(self, record: RequestRecord) -> None:
        """Append one row (one write to the OS); DiskFullError/ResultsError when it cannot."""
        if self._fd is None:
            raise ResultsError(f"record writer for {self.path} is closed")
        try:
            self._write_line(record.to_row())
        except OSError as exc:
            kept = f"{self.rows_written} rows kept" if self.rows_written else "the rows before kept"
            if is_disk_full(exc):
                raise DiskFullError(f"no space left on {self.path.parent}: {kept} in {self.path.name}") from exc
            raise ResultsError(f"cannot write records to {self.path}: {exc.strerror or exc}; {kept}") from exc
        self.rows_written += 1

    def write_rows(self, rows: Sequence[Sequence[str]]) -> None:
        """Append rows already in :data:`ALL_COLUMNS` order (a batch relayed from a worker), in one write.

        All of them or none: a failed write is cut back to the last whole row before the batch.
        """
        if self._fd is None:
            raise ResultsError(f"record writer for {self.path} is closed")
        if not rows:
            return
        try:
            self._write_lines(rows)
        except OSError as exc:
            kept = f"{self.rows_written} rows kept"
            if is_disk_full(exc):
                raise DiskFullError(f"no space left on {self.path.parent}: {kept} in {self.path.name}") from exc
            raise ResultsError(f"cannot write records to {self.path}: {exc.strerror or exc}; {kept}") from exc
        self.rows_written += len(rows)

    def write_many(self, records: Iterable[RequestRecord]) -> None:
        for record in records:
            self.write(record)

    @property
    def closed(self) -> bool:
        return self._fd is None

    def close(self) -> None:
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cut_torn_tail(path: Path, fd: int | None = None) -> int:
    """Cut a last line without its newline (a writer killed mid-row) off ``path``; returns the new size."""
    size = os.fstat(fd).st_size if fd is not None else path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb") as f:
        # Rows are short; a torn one is somewhere in the last block or two.
        start = max(0, size - 65536)
        f.seek(start)
        tail = f.read()
    if tail.endswith(b"\n"):
        return size
    newline = tail.rfind(b"\n")
    keep = start + newline + 1 if newline >= 0 else 0
    if newline < 0 and start > 0:
        return size  # one line longer than 64 KiB: not a records row; leave the file alone
    os.truncate(path, keep)
    return keep


def read_records(paths: Path | str | Iterable[Path | str]) -> pd.DataFrame:
    """Read one or more records files into one DataFrame with :data:`ALL_COLUMNS`.

    Files without the extra columns get their defaults (``send_lag_ms`` 0, ``lag_cause`` "",
    ``protocol`` "rest"). A row
    cut off by a killed writer (missing fields) is dropped. Raises ResultsError for a missing
    file or one that is not a records file. Whole files in memory: summaries of runs of any
    size read :func:`iter_records` instead.
    """
    frames = list(iter_records(paths, chunk_rows=None))
    if not frames:
        return _empty_frame()
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def iter_records(
    paths: Path | str | Iterable[Path | str],
    columns: Sequence[str] | None = None,
    chunk_rows: int | None = CHUNK_ROWS,
) -> Iterator[pd.DataFrame]:
    """The rows of records files in chunks of at most ``chunk_rows`` (None: one chunk per file).

    Each chunk has ``columns`` (default :data:`ALL_COLUMNS`) cleaned as :func:`read_records`
    cleans them, so a summary made chunk by chunk sees exactly the rows a whole-file read sees,
    in the same order. Columns the file has and nobody asked for are not parsed; an optional
    column the file lacks comes with its default. Memory is bounded by the chunk, not the file.
    """
    wanted = tuple(columns) if columns is not None else ALL_COLUMNS
    unknown = [c for c in wanted if c not in _KINDS]
    if unknown:
        raise ValueError(f"not records columns: {', '.join(unknown)}")
    path_list = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    for path in path_list:
        yield from _read_one(path, wanted, chunk_rows)


def _empty_frame(columns: Sequence[str] = ALL_COLUMNS) -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})
    for c in columns:
        if _KINDS[c] == "int":
            frame[c] = frame[c].astype("int64")
        elif _KINDS[c] == "str":
            frame[c] = frame[c].astype("object")
    return frame


def _header(path: Path) -> list[str]:
    try:
        with path.open(encoding="utf-8", newline="") as f:
            return next(csv.reader(f), [])
    except FileNotFoundError as exc:
        raise ResultsError(f"no records file at {path}") from exc
    except (csv.Error, UnicodeDecodeError, OSError) as exc:
        raise ResultsError(f"cannot read records from {path}: {exc}") from exc


def _read_one(path: Path, wanted: tuple[str, ...], chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    header = _header(path)
    if not header:
        yield _empty_frame(wanted)
        return
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise ResultsError(f"{path} is not a records file (missing columns: {', '.join(missing)})")
    parsed = [c for c in header if c in wanted or c in _COMPLETE]
    try:
        reader = pd.read_csv(
            path,
            usecols=parsed,
            dtype={c: "string" for c in parsed if _KINDS.get(c) == "str"},
            keep_default_na=False,
            chunksize=chunk_rows,
        )
        chunks: Iterable[pd.DataFrame] = reader if chunk_rows else [reader]
        for chunk in chunks:
            yield _clean(chunk, wanted)
    except pd.errors.EmptyDataError:
        yield _empty_frame(wanted)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise ResultsError(f"cannot read records from {path}: {exc}") from exc


def _clean(frame: pd.DataFrame, wanted: tuple[str, ...]) -> pd.DataFrame:
    """Numbers parsed (a torn last line's empty fields make it incomplete: dropped), text "" when empty."""
    for c, default in OPTIONAL_DEFAULTS.items():
        if c in wanted and c not in frame.columns:
            frame[c] = default
    for c in frame.columns:
        if _KINDS[c] != "str":
            frame[c] = pd.to_numeric(frame[c], errors="coerce")
    complete = frame[list(_COMPLETE)].notna().all(axis=1)
    if not complete.all():
        frame = frame.loc[complete].copy()
    for c in wanted:
        kind = _KINDS[c]
        if kind == "int":
            frame[c] = frame[c].astype("int64")
        elif kind == "float":
            frame[c] = frame[c].fillna(OPTIONAL_DEFAULTS.get(c, 0.0)).astype("float64")
        else:
            frame[c] = frame[c].fillna("").astype(str)
            if OPTIONAL_DEFAULTS.get(c):
                frame.loc[frame[c] == "", c] = OPTIONAL_DEFAULTS[c]
    return frame[list(wanted)].reset_index(drop=True)


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
    except DiskFullError as exc:
        raise DiskFullError(f"no space left on {out.parent} to merge records into {out.name}; inputs kept") from exc
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(f"no space left on {out.parent} to merge records into {out.name}; inputs kept") from exc
        raise ResultsError(f"cannot merge records into {out}: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return len(frame)
