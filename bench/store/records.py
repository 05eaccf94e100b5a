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
    send_lag_ms     (trailing extra) how late the send started after its intended time; 0 in the
                    closed model. ``latency_ms - send_lag_ms`` is the uncorrected (coordinated
                    omission) latency, kept for comparison as wrk2 does.

Usage::

    with RecordWriter(Path("runs/x/requests.csv")) as writer:   # appends; header once
        writer.write(RequestRecord(t_start=..., latency_ms=12.5, ...))   # one flushed row
    df = read_records(Path("runs/x/requests.csv"))
    summary = summarize(df)                                      # summary.csv columns

Rows are flushed one by one, so a run that is killed keeps every completed request; a last row
cut off mid-write is dropped by :func:`read_records` instead of poisoning the file.

Side-car ``load.json`` files (:class:`LoadStats`) carry what is not per request: warm-up
requests excluded from the records, the load generator's own CPU use and whether it saturated.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from bench.errors import ResultsError
from bench.scenario.schedule import LATE_TOLERANCE_MS

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
EXTRA_COLUMNS: tuple[str, ...] = ("send_lag_ms",)
ALL_COLUMNS: tuple[str, ...] = COLUMNS + EXTRA_COLUMNS

SUMMARY_COLUMNS: tuple[str, ...] = (
    "cell",
    "batch",
    "encoding",
    "requests",
    "errors",
    "rps",
    "images_per_s",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "payload_bytes_mean",
    "encode_us_mean",
)
# Trust columns after the contract's: late sends (open model), the uncorrected p99 that a
# closed-loop tool would have shown, and (with LoadStats) warm-up and client CPU figures.
SUMMARY_EXTRA_COLUMNS: tuple[str, ...] = (
    "late_sends",
    "p99_uncorrected_ms",
    "warmup_excluded",
    "client_cpu_pct",
    "saturated",
)

_INT_COLUMNS = ("status", "batch", "payload_bytes", "response_bytes")
_FLOAT_COLUMNS = ("t_start", "latency_ms", "encode_us", "send_lag_ms")
_STR_COLUMNS = ("encoding", "error", "cell")


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

    Files without the trailing extra columns get their defaults (``send_lag_ms`` = 0). A row
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


@dataclass(frozen=True)
class LoadStats:
    """What a load-generating process knows beyond its records (the ``*.load.json`` side-car).

    ``warmup_by_cell`` counts warm-up requests (sent, never recorded) per cell label;
    ``client_cpu_pct_max`` is the highest windowed CPU use of one generator process (100 =
    one core); ``saturated`` is true when that went above the saturation threshold, i.e. the
    numbers may measure the client rather than the server.
    """

    processes: int = 1
    warmup_by_cell: dict[str, int] = field(default_factory=dict)
    client_cpu_pct_max: float = 0.0
    client_cpu_pct_mean: float = 0.0
    saturated: bool = False
    warnings: tuple[str, ...] = ()
    finished: bool = False

    @property
    def warmup_excluded(self) -> int:
        return sum(self.warmup_by_cell.values())

    def to_json(self) -> str:
        data = asdict(self)
        data["warnings"] = list(self.warnings)
        return json.dumps(data, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LoadStats:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data["warnings"] = tuple(data.get("warnings", ()))
        data["warmup_by_cell"] = {str(k): int(v) for k, v in data.get("warmup_by_cell", {}).items()}
        return cls(**data)


def load_stats_path(records_path: Path | str) -> Path:
    """``requests.csv`` -> ``requests.load.json`` (the side-car next to a records file)."""
    path = Path(records_path)
    return path.with_name(f"{path.stem}.load.json")


def write_load_stats(records_path: Path | str, stats: LoadStats) -> Path:
    """Write the side-car atomically (rename), so a reader never sees half a file."""
    target = load_stats_path(records_path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(stats.to_json(), encoding="utf-8")
        tmp.replace(target)
    except OSError as exc:
        raise ResultsError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return target


def read_load_stats(records_path: Path | str) -> LoadStats | None:
    """The side-car for a records file, or None when there is none."""
    target = load_stats_path(records_path)
    try:
        return LoadStats.from_json(target.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise ResultsError(f"cannot read {target}: {exc}") from exc


def combine_load_stats(parts: Iterable[LoadStats]) -> LoadStats:
    """One LoadStats for several processes: counts add up, CPU keeps the worst process."""
    items = list(parts)
    if not items:
        return LoadStats(processes=0)
    warmup: dict[str, int] = {}
    for item in items:
        for cell, count in item.warmup_by_cell.items():
            warmup[cell] = warmup.get(cell, 0) + count
    return LoadStats(
        processes=sum(i.processes for i in items),
        warmup_by_cell=warmup,
        client_cpu_pct_max=max(i.client_cpu_pct_max for i in items),
        client_cpu_pct_mean=float(np.mean([i.client_cpu_pct_mean for i in items])),
        saturated=any(i.saturated for i in items),
        warnings=tuple(w for i in items for w in i.warnings),
        finished=all(i.finished for i in items),
    )


def summarize(
    df: pd.DataFrame,
    load: LoadStats | None = None,
    late_tolerance_ms: float = LATE_TOLERANCE_MS,
) -> pd.DataFrame:
    """One row per (cell, batch, encoding) with :data:`SUMMARY_COLUMNS`, then the trust columns.

    Percentiles (numpy, linear interpolation) come from every raw row, failed requests
    included: a request that timed out after a stall is latency the user saw. ``rps`` counts
    all requests of the group over the *cell's* wall time (first intended send to last
    completion), so groups of one mixed-batch run add up to the run's rate; ``images_per_s``
    counts successful requests only. ``late_sends`` counts sends that started more than
    ``late_tolerance_ms`` after their intended time (open model).
    """
    columns = [*SUMMARY_COLUMNS, *SUMMARY_EXTRA_COLUMNS]
    if df.empty:
        return pd.DataFrame({c: [] for c in columns})
    frame = df.copy()
    if "send_lag_ms" not in frame.columns:
        frame["send_lag_ms"] = 0.0
    frame["error"] = frame["error"].fillna("").astype(str)
    frame["cell"] = frame["cell"].fillna("").astype(str)
    frame["_end"] = frame["t_start"] + frame["latency_ms"] / 1000.0
    spans = frame.groupby("cell").agg(first=("t_start", "min"), last=("_end", "max"))
    cell_seconds = (spans["last"] - spans["first"]).to_dict()
    rows = []
    for (cell, batch, encoding), group in frame.groupby(["cell", "batch", "encoding"], sort=True):
        latencies = group["latency_ms"].to_numpy(dtype=float)
        uncorrected = latencies - group["send_lag_ms"].to_numpy(dtype=float)
        failed = (group["status"] != 200) | (group["error"] != "")
        ok_count = int((~failed).sum())
        seconds = max(float(cell_seconds[cell]), 1e-9)
        p50, p90, p95, p99 = np.percentile(latencies, [50, 90, 95, 99])
        rows.append(
            {
                "cell": cell,
                "batch": int(batch),
                "encoding": encoding,
                "requests": len(group),
                "errors": int(failed.sum()),
                "rps": len(group) / seconds,
                "images_per_s": ok_count * int(batch) / seconds,
                "p50_ms": float(p50),
                "p90_ms": float(p90),
                "p95_ms": float(p95),
                "p99_ms": float(p99),
                "max_ms": float(latencies.max()),
                "payload_bytes_mean": float(group["payload_bytes"].mean()),
                "encode_us_mean": float(group["encode_us"].mean()),
                "late_sends": int((group["send_lag_ms"] > late_tolerance_ms).sum()),
                "p99_uncorrected_ms": float(np.percentile(uncorrected, 99)),
                "warmup_excluded": load.warmup_by_cell.get(cell, 0) if load else 0,
                "client_cpu_pct": load.client_cpu_pct_max if load else float("nan"),
                "saturated": bool(load.saturated) if load else False,
            }
        )
    return pd.DataFrame(rows, columns=columns)
