"""``tfsbench sweep``: one headless Locust run per (batch size, encoding) cell, every request recorded.

For each cell, in order (encodings outer, batch sizes inner), one headless Locust run
(``bench.commands.cells``); then its rows are appended to ``RUN/requests.csv``, Locust's own counts and the load
generator's CPU share go into ``meta.json``'s ``cells``, and ``summary.csv`` is rewritten, so
the run on disk is consistent after every cell. Where the target serves tensorflow/serving's
Prometheus metrics, they are scraped once each cell's first request is recorded (warm-up done) and
after it ends (bench.target.prometheus).

Failure handling: a cell whose Locust process fails is marked ``failed`` and the grid goes on.
A target that stops answering is noticed by a status poll every 2 s; the cell is stopped, the
run marked incomplete, and later cells run only if the target answers again. Ctrl-C stops the
current cell, keeps every row written so far, marks the run incomplete and exits 130. A full
disk stops the sweep: whole rows kept, meta.json marked incomplete, one line saying how many
rows are kept (DiskFullError). Each cell's Locust dies with the sweep (bench.scenario.parent_death).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from bench.commands.cells import (
    CellResult,
    SweepConfig,
    check_grpc_target,
    merge_cell,
    replica_clients,
    replica_metrics_urls,
    run_cell,
    target_client,
    validate,
)
from bench.commands.docker import sweep_in_container
from bench.commands.preflight import input_options_from_args, prepare_inputs, save_plans
from bench.commands.workers import announce, worker_fields
from bench.errors import BenchError, ConfigError, DiskFullError, ResultsError
from bench.progress import Progress
from bench.store import provenance, runs
from bench.store.atomic import replace_atomically
from bench.target import prometheus
from bench.target.client import TFServingClient
from reports.data import load_run_data, read_run_records
from reports.report import answer_lines, build_report


def describe_target(client: TFServingClient, config: SweepConfig) -> dict[str, Any]:
    """meta.json's ``target``: the model's status and signatures, the server's kind, Prometheus if served.

    With ``--host URL1,URL2,...`` also ``replicas``: each replica's URL, name (the records'
    ``target``), whether it serves the model and whether its own Prometheus metrics answer.
    """
    if config.wait_ready_s > 0:  # replicas started beside the load generator (deploy/compose.yaml) may still load
        for replica in replica_clients(config):
            replica.wait_until_available(config.wait_ready_s)
    target = client.describe()
    kind, version = _server_identity(target["server_header"])
    target["server_kind"] = config.server_kind or kind
    target["server_version"] = version
    target["server_kind_source"] = "--server-kind" if config.server_kind else "Server header"
    urls = replica_metrics_urls(config)
    scraped = {name: prometheus.exposes(url) for name, url in urls.items()}
    target["prometheus"] = config.metrics_path if all(scraped.values()) else None
    if len(urls) > 1:
        target["replicas"] = [
            {
                "url": c.base_url,
                "name": name,
                "serving": c.is_serving(),
                "prometheus": urls[name] if scraped[name] else None,
            }
            for c, name in zip(replica_clients(config), urls, strict=True)
        ]
    return target


def _server_identity(header: str | None) -> tuple[str, str | None]:
    """(kind, version) from the HTTP Server header; tensorflow/serving sends none we can rely on."""
    if not header:
        return "unknown", None
    low = header.lower()
    name, _, version = header.partition("/")
    if "tfsbench" in low:
        return "embedded", version.split()[0] if version else None
    if "tensorflow" in low:
        return "tensorflow-serving", version.split()[0] if version else None
    return f"other ({name})", version.split()[0] if version else None


def _cell_ended(progress: Progress, cell: CellResult) -> None:
    progress.step()
    cpu = f", client CPU {cell.client_cpu_pct:.0f}%" if cell.client_cpu_pct is not None else ""
    if cell.processes > 1 and cell.client_cpu_pct is not None:
        cpu += f" (busiest of {cell.processes} processes)"
    if cell.stable is not None:
        cpu += f", {'stable' if cell.stable else 'not stable'} after {cell.windows or 0} windows"
    err = f" ({cell.error})" if cell.error else ""
    progress.line(
        f"{cell.cell}: {cell.status}, {cell.records} requests recorded{cpu}, "
        f"{cell.wall_s or 0:.0f} s (total {progress.elapsed_s:.0f} s){err}"
    )


def _write_state(run_dir: Path, cells: list[CellResult], **fields: Any) -> None:
    runs.update_meta(run_dir, cells=[asdict(c) for c in cells], **fields)
    try:
        data = load_run_data(run_dir)
    except ResultsError:
        return  # no rows yet: summary.csv appears with the first recorded request
    replace_atomically(
        run_dir / runs.SUMMARY_FILE, lambda tmp: data.summary.to_csv(tmp, index=False, float_format="%.10g")
    )


def _stopped_by_full_disk(run_dir: Path, cells: list[CellResult], cell: CellResult, cell_dir: Path) -> DiskFullError:
    """The disk filled up during ``cell``: keep what is whole, say so in meta.json, stop the sweep.

    The cell's rows stay in its own file if they could not join requests.csv (reports read both);
    the later cells are skipped; meta.json is marked incomplete with the reason (in place, in
    compact form, if a new file no longer fits).
    """
    if not cell.merged:
        with contextlib.suppress(ResultsError):
            merge_cell(run_dir, cell, cell_dir)
    if cell.status in ("running", "done"):
        cell.status = "failed"
    cell.error = cell.error or "no space left for the records"
    for rest in cells:
        if rest.status == "pending":
            rest.status = "skipped"
    reason = f"no space left on {run_dir} during cell {cell.cell}"
    with contextlib.suppress(ResultsError):
        runs.update_meta(
            run_dir,
            cells=[asdict(c) for c in cells],
            incomplete=True,
            incomplete_reason=reason,
            finished_utc=runs.utc_now().isoformat(timespec="seconds"),
        )
    try:
        kept = len(read_run_records(runs.load_run(run_dir)))
    except ResultsError:
        kept = 0
    return DiskFullError(f"no space left on {run_dir}: {kept} rows kept")


def run_sweep_config(config: SweepConfig, out: Path, extra_meta: dict[str, Any] | None = None) -> Path:
    """Run the whole grid into a new run directory under ``out``; returns the run directory.

    Raises KeyboardInterrupt after saving everything when interrupted.
    """
    validate(config)
    client = target_client(config)
    target = describe_target(client, config)
    grpc_target = check_grpc_target(config)
    if grpc_target:
        target["grpc_target"] = grpc_target
    inputs = replace(config.inputs, images=config.images)
    plans, signature = prepare_inputs(
        client, config.encodings, config.batch_sizes, inputs, config.signature_name, grpc_target
    )
    run_dir = runs.new_run_dir(out)
    config = replace(config, input_plan=save_plans(run_dir, plans))
    cells = [CellResult(runs.cell_name(b, e), b, e) for e in config.encodings for b in config.batch_sizes]
    runs.update_meta(
        run_dir,
        command="sweep",
        argv=sys.argv[1:],
        config={**asdict(config), "load": config.load_text, "locustfile": os.path.relpath(config.locustfile)},
        target=target,
        signature=signature,
        **provenance.collect_environment(),
        cells=[asdict(c) for c in cells],
        **(extra_meta or {}),
    )
    print(f"sweep: {len(cells)} cells -> {run_dir}", file=sys.stderr)
    announce(
        "sweep", config.expect_workers, config.locustfile, config.master_bind_host, config.master_bind_port,
        config.workers_wait_s,
    )  # fmt: skip
    progress = Progress(len(cells))
    urls = replica_metrics_urls(config)
    metrics_url: str | dict[str, str] | None = None
    if target["prometheus"]:
        metrics_url = urls if len(urls) > 1 else next(iter(urls.values()))
    problems: list[str] = []
    log_file = run_dir / "locust.log"
    for i, cell in enumerate(cells):
        if not client.is_serving():
            cell.status, cell.error = "skipped", f"{config.host} not answering before the cell"
            problems.append(f"{cell.cell} skipped (server not answering)")
            _cell_ended(progress, cell)
            _write_state(run_dir, cells)
            continue
        progress.line(f"{cell.cell} ...")
        cell_dir = run_dir / runs.CELLS_DIR / cell.cell
        try:
            run_cell(config, cell, cell_dir, log_file, metrics_url)
            merge_cell(run_dir, cell, cell_dir)
            if cell.status != "done":
                problems.append(f"{cell.cell} {cell.status}" + (f": {cell.error}" if cell.error else ""))
            _cell_ended(progress, cell)
            _write_state(run_dir, cells)
        except DiskFullError:
            raise _stopped_by_full_disk(run_dir, cells, cell, cell_dir) from None
        except KeyboardInterrupt:
            merge_cell(run_dir, cell, cell_dir)
            for rest in cells[i + 1 :]:
                rest.status = "skipped"
            _write_state(
                run_dir,
                cells,
                incomplete=True,
                incomplete_reason=f"interrupted (Ctrl-C) during cell {cell.cell}",
                finished_utc=runs.utc_now().isoformat(timespec="seconds"),
            )
            _cell_ended(progress, cell)
            print(f"sweep: interrupted; {run_dir} keeps every recorded request", file=sys.stderr)
            raise
    _write_state(
        run_dir,
        cells,
        incomplete=bool(problems),
        incomplete_reason="; ".join(problems)[:2000] if problems else None,
        finished_utc=runs.utc_now().isoformat(timespec="seconds"),
    )
    return run_dir


def config_from_args(args: argparse.Namespace) -> SweepConfig:
    return SweepConfig(
        host=args.host,
        wait_ready_s=args.wait_ready,
        batch_sizes=tuple(args.batch_sizes),
        encodings=tuple(args.encodings),
        users=args.users,
        arrival=args.arrival,
        rate_per_s=args.rate,
        duration_s=args.duration,
        requests=args.requests,
        warmup=args.warmup,
        processes=args.processes,
        model_name=args.model_name,
        model_version=args.model_version,
        signature_name=args.signature_name or "",
        images=str(args.images) if args.images else None,
        pool_size=args.pool_size,
        metrics_path=args.metrics_path,
        server_kind=args.server_kind,
        stability_pct=args.stability,
        stability_window_s=args.stability_window,
        inputs=input_options_from_args(args),
        grpc_target=getattr(args, "grpc_target", None),
        **worker_fields(args),
    )


def run_sweep(args: argparse.Namespace, extra_meta: dict[str, Any] | None = None) -> int:
    if getattr(args, "docker", None) and extra_meta is None:
        return sweep_in_container(args, run_sweep)  # starts the container, calls back here, stops it
    if not args.host:
        raise ConfigError("--host URL is required (or --docker IMAGE to start a container for the sweep)")
    config = config_from_args(args)
    slo = getattr(args, "slo", None)
    if slo is not None:  # what the answer lines judge cells by (reports.answer)
        extra_meta = {
            **(extra_meta or {}),
            "slo": {"text": f"p{slo[0]:g}<{slo[1]:g}ms", "percentile": slo[0], "limit_ms": slo[1]},
        }
    run_dir = run_sweep_config(config, args.out, extra_meta)
    run = runs.load_run(run_dir)
    print(f"run: {run_dir}")
    recorded = any(c.get("records") for c in run.cells)
    if recorded:
        answer = build_report(run_dir).answer if args.report else answer_lines(run_dir)
        if args.report:
            print(f"report: {run.report_path}")
        print("\n".join(("What this run says:", *answer)))
    if not recorded:
        raise BenchError(f"no request was recorded in {run_dir} (see {run_dir / 'locust.log'})")
    if run.incomplete:
        # Every recorded row is kept and reported; the exit status still says not all went well.
        raise BenchError(f"incomplete run {run_dir}: {run.incomplete_reason}")
    return 0
