"""``tfsbench tune``: search server batching configurations for the most images/s within an SLO.

For each configuration the search picks (bench.commands.tune_space: batching off first, then the
batching guide's starting point, then one parameter at a time while throughput within the SLO
improves), one server start (bench.commands.tune_servers) and, for every client batch size and
encoding, the capacity search of ``tfsbench capacity`` (bench.commands.capacity_run) against it.
Bounded by ``--max-configs`` and ``--budget``; after every configuration the run directory is
rewritten whole, so an interrupted tune keeps every finished configuration and ``--resume RUN``
continues it (the search replays the finished ones from tune.csv and measures only the rest)::

    runs/<id>/tune.csv                    one row per configuration x client batch x encoding
    runs/<id>/batching_parameters.txt     the recommended configuration, ready for tensorflow_model_server
    runs/<id>/configs/<key>/              each configuration's parameters file, server log, capacity run
    runs/<id>/report.html                 the throughput-vs-latency front and its table
    runs/<id>/meta.json                   command tune, config, space, configurations and their status
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from bench.commands.capacity import config_from_args as capacity_config_from_args
from bench.commands.capacity_run import CapacityConfig, run_capacity_config
from bench.commands.capacity_search import CapacityResult
from bench.commands.tune_servers import ServerTarget, started_server
from bench.commands.tune_space import (
    OFF,
    PARAMETERS,
    BatchingConfig,
    Point,
    Space,
    grid_size,
    pareto_front,
    parse_space,
    recommend,
    search,
)
from bench.errors import ConfigError, ResultsError
from bench.store import provenance, runs
from bench.store.atomic import replace_atomically
from reports.tune_report import build_tune_report

TUNE_FILE = "tune.csv"
RECOMMENDED_FILE = "batching_parameters.txt"
CONFIGS_DIR = "configs"
TUNE_COLUMNS: tuple[str, ...] = (
    "config",
    "batching",
    *PARAMETERS,
    "client_batch",
    "encoding",
    "max_images_per_s",
    "max_rps",
    "latency_ms_at_max",
    "latency_ci_low_ms",
    "latency_ci_high_ms",
    "limited_by",
    "met_slo",
    "server_cpu_pct",
    "server_peak_rss_mb",
    "capacity_run",
    "config_point",
    "on_front",
    "recommended",
)


@dataclass(frozen=True)
class TuneConfig:
    """What ``tfsbench tune`` searches; serialised into meta.json's ``config``."""

    space: Space
    capacity: CapacityConfig  # host is filled per configuration; batch sizes are the client's
    target: ServerTarget
    max_configs: int = 12
    budget_s: float | None = None
    cpu_count: int = os.cpu_count() or 1

    def to_meta(self) -> dict[str, Any]:
        return {
            "space": {k: list(v) for k, v in self.space.items()},
            "capacity": asdict(self.capacity),
            "target": {**asdict(self.target), "model_base_path": str(self.target.model_base_path)},
            "max_configs": self.max_configs,
            "budget_s": self.budget_s,
            "cpu_count": self.cpu_count,
            "grid_size": grid_size(self.space),
        }


def point_row(rows: pd.DataFrame) -> Any:
    """The index of a configuration's point among its rows: its best client cell within the SLO
    (most images/s, then lowest latency); None when no cell met the SLO."""
    met = rows[rows["met_slo"].astype(bool)]
    if not len(met):
        return None
    return met.sort_values(["max_images_per_s", "latency_ms_at_max"], ascending=[False, True], kind="stable").index[0]


def point_of(config: BatchingConfig, rows: pd.DataFrame) -> Point:
    """A configuration's point (:func:`point_row`); none met the SLO: no throughput, its least bad latency."""
    index = point_row(rows)
    if index is not None:
        return Point(
            config, float(rows.at[index, "max_images_per_s"]), float(rows.at[index, "latency_ms_at_max"]), True
        )
    latency = pd.to_numeric(rows["latency_ms_at_max"], errors="coerce").min()
    return Point(config, 0.0, float(latency) if not math.isnan(latency) else math.inf, False)


def _config_of_row(row: pd.Series) -> BatchingConfig:
    if not bool(row["batching"]):
        return OFF
    return BatchingConfig(
        max_batch_size=int(row["max_batch_size"]),
        batch_timeout_micros=int(row["batch_timeout_micros"]),
        num_batch_threads=int(row["num_batch_threads"]),
        max_enqueued_batches=int(row["max_enqueued_batches"]),
    )


class TuneRun:
    """One tune's run directory: measures configurations on demand, keeps tune.csv and meta.json current."""

    def __init__(self, config: TuneConfig, run_dir: Path, previous: pd.DataFrame | None = None) -> None:
        self.config = config
        self.run_dir = run_dir
        self.rows: list[dict[str, Any]] = [] if previous is None else previous.to_dict("records")
        self.measured: list[str] = []  # configuration keys measured in this invocation
        self.started = time.monotonic()

    def finished(self) -> dict[str, pd.DataFrame]:
        frame = pd.DataFrame(self.rows, columns=list(TUNE_COLUMNS))
        return {str(key): group for key, group in frame.groupby("config", sort=False)}

    def _budget_left(self) -> bool:
        done = len(self.finished())
        if done >= self.config.max_configs:
            return False
        if self.config.budget_s is None:
            return True
        elapsed = time.monotonic() - self.started
        per_config = elapsed / len(self.measured) if self.measured else 0.0
        return elapsed + per_config <= self.config.budget_s

    def measure(self, config: BatchingConfig) -> Point | None:
        """The configuration's point: replayed from tune.csv when finished before, else measured now."""
        done = self.finished()
        if config.key in done:
            print(f"tune: {config.key}: finished before (replayed from {TUNE_FILE})", file=sys.stderr)
            return point_of(config, done[config.key])
        if not self._budget_left():
            return None
        index = len(done) + 1
        print(f"tune: configuration {index} ({config.key}) ...", file=sys.stderr, flush=True)
        workdir = self.run_dir / CONFIGS_DIR / config.key
        with started_server(self.config.target, config, workdir) as (url, usage):
            usage.start()
            capacity = replace(self.config.capacity, host=url)
            capacity_dir, results = run_capacity_config(capacity, workdir)
            usage.finish()
        for result in results:
            self.rows.append(self._row(config, result, capacity_dir, usage.cpu_pct, usage.peak_rss_mb))
        self.measured.append(config.key)
        point = point_of(config, pd.DataFrame(self.rows[-len(results) :], columns=list(TUNE_COLUMNS)))
        verdict = f"{point.images_per_s:.0f} images/s at p{capacity.percentile:g} {point.latency_ms:.1f} ms"
        print(f"tune: {config.key}: {verdict if point.met_slo else 'no rate met the SLO'}", file=sys.stderr)
        self.save()
        return point

    def _row(
        self, config: BatchingConfig, result: CapacityResult, capacity_dir: Path, cpu: float | None, rss: float | None
    ) -> dict[str, Any]:
        return {
            "config": config.key,
            **config.as_dict(),
            "client_batch": result.batch,
            "encoding": result.encoding,
            "max_images_per_s": result.max_images_per_s,
            "max_rps": result.max_rps,
            "latency_ms_at_max": result.latency_ms_at_max,
            "latency_ci_low_ms": result.latency_ci_low_ms,
            "latency_ci_high_ms": result.latency_ci_high_ms,
            "limited_by": result.limited_by,
            "met_slo": result.met_slo,
            "server_cpu_pct": cpu,
            "server_peak_rss_mb": rss,
            "capacity_run": os.path.relpath(capacity_dir, self.run_dir),
            "config_point": False,
            "on_front": False,
            "recommended": False,
        }

    def points(self) -> list[Point]:
        return [point_of(_config_of_row(rows.iloc[0]), rows) for rows in self.finished().values()]

    def save(self, **meta_fields: Any) -> Point | None:
        """tune.csv (front and recommendation marked), the recommended file, meta.json; each replaced whole."""
        points = self.points()
        front = {p.config.key for p in pareto_front(points)}
        best = recommend(points)
        frame = pd.DataFrame(self.rows, columns=list(TUNE_COLUMNS))
        if len(frame):
            points_at = [point_row(rows) for _, rows in frame.groupby("config", sort=False)]
            frame["config_point"] = frame.index.isin([i for i in points_at if i is not None])
            frame["on_front"] = frame["config_point"] & frame["config"].isin(front)
            frame["recommended"] = frame["config_point"] & (frame["config"] == (best.config.key if best else None))
        for name in PARAMETERS:  # integers, empty for batching off (not 1e+06)
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("Int64")
        replace_atomically(self.run_dir / TUNE_FILE, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))
        recommended = self.run_dir / RECOMMENDED_FILE
        if best is not None and best.config.enabled:
            text = recommended_file_text(best, self.config)
            replace_atomically(recommended, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        else:
            recommended.unlink(missing_ok=True)
        runs.update_meta(
            self.run_dir,
            configurations=[_configuration_meta(p) for p in points],
            front=sorted(front),
            recommended=best.config.key if best else None,
            **meta_fields,
        )
        return best


def _configuration_meta(point: Point) -> dict[str, Any]:
    latency = None if math.isinf(point.latency_ms) else point.latency_ms
    return {
        "key": point.config.key,
        **point.config.as_dict(),
        "images_per_s": point.images_per_s,
        "latency_ms": latency,
        "met_slo": point.met_slo,
    }


def recommended_file_text(best: Point, config: TuneConfig) -> str:
    """The recommended BatchingParameters, with what was measured and the guide's production advice."""
    slo = config.capacity.slo_text
    threads = best.config.num_batch_threads
    return (
        f"# tfsbench tune: {best.images_per_s:.0f} images/s within {slo} "
        f"(p{config.capacity.percentile:g} {best.latency_ms:.1f} ms at that load) on the {config.target.kind} server.\n"
        "# Use with: tensorflow_model_server --enable_batching=true --batching_parameters_file=<this file>\n"
        "# max_enqueued_batches was kept very high while measuring, as tensorflow/serving's batching guide\n"
        f"# advises; for online serving the guide suggests max_enqueued_batches = num_batch_threads ({threads}).\n"
        + best.config.parameters_text()
    )


def _new_or_resumed(config: TuneConfig, out: Path, resume: Path | None) -> tuple[Path, pd.DataFrame | None]:
    if resume is None:
        run_dir = runs.new_run_dir(out)
        runs.update_meta(
            run_dir, command="tune", argv=sys.argv[1:], config=config.to_meta(), **provenance.collect_environment()
        )
        return run_dir, None
    run = runs.load_run(resume)
    if run.meta.get("command") != "tune":
        raise ConfigError(f"--resume {resume}: not a tfsbench tune run (command {run.meta.get('command')!r})")
    previous = run.meta.get("config") or {}
    if previous.get("space") != {k: list(v) for k, v in config.space.items()}:
        raise ConfigError(f"--resume {resume}: its --space was {previous.get('space')}; give the same space to resume")
    path = run.path / TUNE_FILE
    try:
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""]) if path.is_file() else None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as exc:
        raise ResultsError(f"cannot read {path}: {exc}") from exc
    if frame is not None:
        missing = [c for c in TUNE_COLUMNS if c not in frame.columns]
        if missing:
            raise ResultsError(f"{path} is not a tune table (missing {', '.join(missing)})")
    runs.update_meta(run.path, incomplete=True, incomplete_reason="running (resumed)", resumed_utc=_now_text())
    return run.path, frame


def _now_text() -> str:
    return runs.utc_now().isoformat(timespec="seconds")


def run_tune_config(config: TuneConfig, out: Path, resume: Path | None = None) -> tuple[Path, TuneRun]:
    """Search into a new (or the resumed) run directory; returns it and the finished TuneRun.

    Raises KeyboardInterrupt after saving when interrupted.
    """
    run_dir, previous = _new_or_resumed(config, out, resume)
    tune = TuneRun(config, run_dir, previous)
    grid = grid_size(config.space)
    print(
        f"tune: up to {min(config.max_configs, grid)} of the grid's {grid} configurations at "
        f"{config.capacity.slo_text} on the {config.target.kind} server -> {run_dir}",
        file=sys.stderr,
        flush=True,
    )
    try:
        points = search(config.space, config.cpu_count, tune.measure)
    except BaseException as exc:
        reason = "interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(ResultsError):
            tune.save(incomplete=True, incomplete_reason=reason, finished_utc=_now_text())
        raise
    stopped = len(tune.finished()) >= config.max_configs or (config.budget_s is not None and not tune._budget_left())
    tune.save(
        incomplete=False,
        incomplete_reason=None,
        finished_utc=_now_text(),
        search_stopped_by=("budget or --max-configs" if stopped else "no single step improved"),
        configurations_searched=len(points),
        search_s=round(time.monotonic() - tune.started, 1),
    )
    return run_dir, tune


def answer_lines(tune: TuneRun) -> list[str]:
    """What the tune says, in a few lines: the recommendation, against batching off, the front, warnings."""
    points = tune.points()
    slo = tune.config.capacity.slo_text
    best = recommend(points)
    base = next((p for p in points if not p.config.enabled), None)
    lines = [f"tune: {len(points)} configurations measured (grid: {grid_size(tune.config.space)})"]
    if best is None:
        lines.append(f"no configuration met {slo}: loosen the SLO or look at the capacity runs under configs/")
    else:
        lines.append(
            f"recommended: {best.config.key}: {best.images_per_s:.0f} images/s within {slo} "
            f"(p{tune.config.capacity.percentile:g} {best.latency_ms:.1f} ms)"
        )
        if base is not None and base.met_slo and base is not best:
            ratio = best.images_per_s / base.images_per_s if base.images_per_s else math.inf
            lines.append(f"batching off: {base.images_per_s:.0f} images/s ({ratio:.2f}x with the recommendation)")
        elif base is not None and not base.met_slo:
            lines.append("batching off: no rate met the SLO")
        front = pareto_front(points)
        shown = ", ".join(f"{p.config.key} ({p.images_per_s:.0f} img/s, {p.latency_ms:.1f} ms)" for p in front)
        lines.append(f"front: {shown}")
    generator = sorted({str(r["config"]) for r in tune.rows if r["limited_by"] == "generator"})
    if generator:
        lines.append(
            f"warning: the load generator, not the server, limited {len(generator)} configuration(s) "
            f"({', '.join(generator)}): their numbers are lower bounds; use --processes or a quieter machine"
        )
    return lines


def config_from_args(args: argparse.Namespace) -> TuneConfig:
    if bool(args.embedded) == bool(args.docker):
        raise ConfigError("give one target: --embedded (the embedded server) or --docker IMAGE")
    if args.cpus is not None and not args.docker:
        raise ConfigError("--cpus/--memory limit a container: use them with --docker IMAGE")
    base = args.model_base_path
    if not base.is_dir():
        raise ConfigError(f"--model-base-path {base}: no such directory (export a model first: tfsbench export)")
    space = parse_space(args.space)
    capacity = capacity_config_from_args(
        argparse.Namespace(**{**vars(args), "host": "", "target": None, "headroom": 0.3})
    )
    target = ServerTarget(
        model_base_path=base, model_name=args.model_name, image=args.docker, cpus=args.cpus, memory=args.memory
    )
    return TuneConfig(space, capacity, target, args.max_configs, args.budget)


def run_tune(args: argparse.Namespace) -> int:
    """``tfsbench tune``: the answer on stdout, progress on stderr, files in a new (or resumed) run directory."""
    config = config_from_args(args)
    run_dir, tune = run_tune_config(config, args.out, args.resume)
    print("\n".join(answer_lines(tune)))
    print(f"run: {run_dir}")
    if (run_dir / RECOMMENDED_FILE).is_file():
        print(f"recommended file: {run_dir / RECOMMENDED_FILE}")
    if args.report:
        print(f"report: {build_tune_report(run_dir)}")
    return 0
