"""``tfsbench capacity``: the highest load one replica serves within a latency SLO, per cell.

The search is ``bench.commands.capacity_search`` (pure), the probes and the run directory are
``bench.commands.capacity_run``; this module turns the command line into a search and prints the
answer: a table per (batch size, encoding), then what to deploy.
"""

from __future__ import annotations

import argparse
import math

from bench.commands.capacity_run import CapacityConfig, run_capacity_config
from bench.commands.capacity_search import CapacityResult
from bench.commands.preflight import input_options_from_args
from bench.commands.workers import worker_fields
from bench.errors import ConfigError, ResultsError
from bench.target.replicas import parse_hosts
from reports.report import build_report


def answer_lines(results: list[CapacityResult], config: CapacityConfig) -> list[str]:
    """The final table and the sentences under it (what to deploy, what could not be met)."""
    pct = f"p{config.percentile:g}"
    # --host URL1,...,URLN: the search measured the N replicas together; the plan divides by N.
    n = len(parse_hosts(config.host))
    scope = "per replica" if n == 1 else f"of {n} replicas together"
    target = (
        f", replicas for {config.target_images_per_s:g} img/s with {config.headroom:.0%} headroom"
        if config.target_images_per_s
        else ""
    )
    lines = [
        f"capacity {scope} at {config.slo_text} ({config.arrival} arrivals){target}:",
        f"{'batch':>5}  {'encoding':<16} {'max req/s':>9} {'images/s':>9} {pct + ' ms':>9} {'95% interval':>15} "
        f"{'samples':>7} {'replicas':>8}  limited by",
    ]
    for r in results:
        replicas = r.replicas(config.target_images_per_s, config.headroom, n)
        latency = "–" if math.isnan(r.latency_ms_at_max) else f"{r.latency_ms_at_max:.1f}"
        lines.append(
            f"{r.batch:>5}  {r.encoding:<16} {r.max_rps:>9.1f} {r.max_images_per_s:>9.1f} {latency:>9} "
            f"{interval_text(r.latency_ci_low_ms, r.latency_ci_high_ms, r.met_slo):>15} "
            f"{r.samples:>7} {'–' if replicas is None else replicas:>8}  {r.limited_by}"
        )
    for r in results:
        lines += _caveats(r, config)
    for r in results:
        if not r.met_slo:
            measured = [p for p in r.probes if p.requests]
            lowest = min(measured, key=lambda p: p.rate_rps) if measured else None
            detail = (
                f"lowest probe {lowest.rate_rps:.4g} req/s had {pct} {lowest.latency_pct_ms:.1f} ms"
                + (f", {lowest.errors} errors" if lowest.errors else "")
                if lowest
                else "no probe got a reply"
            )
            lines.append(f"b{r.batch} {r.encoding}: no rate met {config.slo_text}; {detail}")
    met = [r for r in results if r.met_slo]
    if met:
        best = max(met, key=lambda r: r.max_images_per_s)
        at_least = "at least " if best.limited_by in ("generator", "max-rate", "max-probes") else ""
        line = (
            f"best: batch {best.batch} {best.encoding}, {at_least}{best.max_images_per_s:.1f} images/s {scope} "
            f"({best.max_rps:.1f} req/s) at {pct} {best.latency_ms_at_max:.1f} ms "
            f"(95% interval {interval_text(best.latency_ci_low_ms, best.latency_ci_high_ms)})"
        )
        replicas = best.replicas(config.target_images_per_s, config.headroom, n)
        if replicas is not None:
            line += (
                f"; {config.target_images_per_s:g} img/s with {config.headroom:.0%} headroom needs {replicas} "
                f"replica{'s' if replicas != 1 else ''}"
            )
        lines.append(line)
    return lines


def interval_text(low: float, high: float, shown: bool = True) -> str:
    """``41.2–58.0`` for a 95 % interval; an end too few samples can bound is ``?``."""
    if not shown:
        return "–"
    return f"{'?' if math.isnan(low) else f'{low:.1f}'}–{'?' if math.isnan(high) else f'{high:.1f}'}"


def _caveats(r: CapacityResult, config: CapacityConfig) -> list[str]:
    """What a reader must know about one answer: a lower bound only, a bracket wider than asked."""
    name = f"b{r.batch} {r.encoding}"
    lines = []
    if r.limited_by == "generator":
        above = f" at {r.fail_rps:.4g} req/s" if r.fail_rps else ""
        lines.append(
            f"{name}: the load generator could not keep up{above}: {r.max_rps:.4g} req/s is a lower bound, not the "
            "server's capacity; add --processes (one per core) or load machines"
        )
    elif r.limited_by == "max-rate":
        lines.append(f"{name}: --max-rate {config.max_rps:g} req/s passed: the capacity is at least that")
    elif r.limited_by == "max-probes":
        lines.append(
            f"{name}: every probe passed before --max-probes {config.max_probes} ran out: {r.max_rps:.4g} req/s is "
            "a lower bound; raise --max-probes or --growth"
        )
    if not r.tolerance_met and r.gap is not None:
        lines.append(
            f"{name}: warning: stopped with the answer between {r.max_rps:.4g} and {r.fail_rps:.4g} req/s "
            f"({r.gap:.0%} apart, --tolerance {config.tolerance:.0%}): raise --max-probes or --tolerance"
        )
    return lines


def config_from_args(args: argparse.Namespace) -> CapacityConfig:
    percentile, limit_ms = args.slo
    return CapacityConfig(
        host=args.host,
        wait_ready_s=args.wait_ready,
        percentile=percentile,
        limit_ms=limit_ms,
        batch_sizes=tuple(args.batch_sizes),
        encodings=tuple(args.encodings),
        arrival=args.arrival,
        target_images_per_s=args.target,
        headroom=args.headroom,
        start_rps=args.start_rate,
        growth=args.growth,
        tolerance=args.tolerance,
        max_probes=args.max_probes,
        max_rps=args.max_rate,
        min_samples=args.min_samples,
        max_probe_s=args.max_probe_time,
        min_measure_s=args.min_measure_time,
        warmup_s=args.warmup_time,
        max_users=args.max_users,
        processes=args.processes,
        calibration_s=args.calibration_time,
        calibration_users=args.calibration_users,
        stability_pct=args.stability,
        stability_window_s=args.stability_window,
        model_name=args.model_name,
        model_version=args.model_version,
        signature_name=args.signature_name or "",
        images=str(args.images) if args.images else None,
        pool_size=args.pool_size,
        inputs=input_options_from_args(args),
        grpc_target=getattr(args, "grpc_target", None),
        **worker_fields(args),
    )


def run_capacity(args: argparse.Namespace) -> int:
    """``tfsbench capacity``: the table on stdout, progress on stderr, files in a new run directory."""
    if not args.host:
        raise ConfigError("--host URL is required (or --replicas 1,2 to measure replicas on deploy/compose.yaml)")
    config = config_from_args(args)
    run_dir, results = run_capacity_config(config, args.out)
    print("\n".join(answer_lines(results, config)))
    print(f"run: {run_dir}")
    if args.report:
        try:
            print(f"report: {build_report(run_dir).html_path}")
        except ResultsError as exc:
            print(f"report: not built ({exc})")
    return 0
