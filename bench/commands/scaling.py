"""``tfsbench capacity --replicas 1,2``: the replica plan, checked on the compose deployment.

For each replica count N: deploy/compose.yaml's ``serving`` scaled to N (each replica the same
``--serving-cpus`` share, bench.docker.compose), the usual capacity search against all N
replicas addressed one by one (``--host URL1,...,URLN``: each user keeps one), then the next N.
Per (batch size, encoding) the answer puts the measured images/s at N next to the single-replica
prediction (N times the 1-replica capacity) and their ratio, the scaling efficiency. The
replicas needed for ``--target`` then use the per-replica capacity at the largest N measured
(capacity(N) / N, which carries its efficiency), not the single replica's: the plan that was
measured, not the one extrapolated. ``scaling.csv`` and meta.json's ``scaling`` (in the last
run directory) keep the table; each N has its own capacity run.

scaling.csv columns: batch, encoding, replicas, max_images_per_s, predicted_images_per_s,
efficiency, limited_by, run.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from bench.commands.capacity import answer_lines, config_from_args, run_capacity
from bench.commands.capacity_run import CapacityConfig, run_capacity_config
from bench.commands.capacity_search import CapacityResult
from bench.docker.compose import ComposeServing
from bench.errors import ConfigError
from bench.payloads.encodings import get_encoding
from bench.store import runs
from bench.store.atomic import replace_atomically

SCALING_FILE = "scaling.csv"
READY_WAIT_S = 300.0  # N replicas importing TensorFlow side by side on a busy machine


def scaling_table(measured: dict[int, tuple[Path, list[CapacityResult]]]) -> pd.DataFrame:
    """One row per (cell, replica count): measured vs predicted images/s and the efficiency."""
    rows: list[dict[str, Any]] = []
    one = {(r.batch, r.encoding): r for r in measured[min(measured)][1]} if measured else {}
    for count, (run_dir, results) in sorted(measured.items()):
        for r in results:
            base = one.get((r.batch, r.encoding))
            single = base.max_images_per_s / min(measured) if base is not None and base.met_slo else math.nan
            predicted = count * single
            measured_ips = r.max_images_per_s if r.met_slo else math.nan
            rows.append(
                {
                    "batch": r.batch,
                    "encoding": r.encoding,
                    "replicas": count,
                    "max_images_per_s": measured_ips,
                    "predicted_images_per_s": predicted,
                    "efficiency": measured_ips / predicted if predicted > 0 else math.nan,
                    "limited_by": r.limited_by,
                    "run": run_dir.name,
                }
            )
    return pd.DataFrame(rows)


def replicas_needed(table: pd.DataFrame, target: float, headroom: float) -> dict[tuple[int, str], tuple[int, int]]:
    """Per cell: (replicas by the measured per-replica capacity at the largest N, by the 1-replica prediction)."""
    out: dict[tuple[int, str], tuple[int, int]] = {}
    for (batch, encoding), group in table.groupby(["batch", "encoding"]):
        top = group.loc[group["replicas"].idxmax()]
        single = group.loc[group["replicas"].idxmin()]
        per_measured = top["max_images_per_s"] / top["replicas"]
        per_single = single["max_images_per_s"] / single["replicas"]
        if not (per_measured > 0 and per_single > 0):
            continue
        out[(int(batch), str(encoding))] = (
            max(1, math.ceil(target / (per_measured * (1 - headroom)))),
            max(1, math.ceil(target / (per_single * (1 - headroom)))),
        )
    return out


def scaling_lines(table: pd.DataFrame, config: CapacityConfig, cpus: float) -> list[str]:
    lines = [
        f"scaling at {config.slo_text}, each replica {cpus:g} CPUs (measured vs N x the 1-replica capacity):",
        f"{'batch':>5}  {'encoding':<16} {'replicas':>8} {'images/s':>9} {'predicted':>9} {'efficiency':>10}"
        "  limited by",
    ]
    for _, r in table.iterrows():
        eff = "–" if math.isnan(r["efficiency"]) else f"{r['efficiency']:.0%}"
        ips = "–" if math.isnan(r["max_images_per_s"]) else f"{r['max_images_per_s']:.1f}"
        pred = "–" if math.isnan(r["predicted_images_per_s"]) else f"{r['predicted_images_per_s']:.1f}"
        lines.append(
            f"{r['batch']:>5}  {r['encoding']:<16} {r['replicas']:>8} {ips:>9} {pred:>9} {eff:>10}  {r['limited_by']}"
        )
    if config.target_images_per_s:
        for (batch, encoding), (measured, predicted) in replicas_needed(
            table, config.target_images_per_s, config.headroom
        ).items():
            lines.append(
                f"b{batch} {encoding}: {config.target_images_per_s:g} img/s with {config.headroom:.0%} headroom needs "
                f"{measured} replicas at the measured efficiency ({predicted} by the single-replica prediction)"
            )
    return lines


def run(args: argparse.Namespace) -> int:
    """``tfsbench capacity``'s handler: ``--replicas`` measures replica counts, otherwise one target."""
    return run_scaling(args) if args.replicas else run_capacity(args)


def run_scaling(args: argparse.Namespace) -> int:
    """``tfsbench capacity --replicas LIST``: one capacity run per replica count on deploy/compose.yaml."""
    if args.host:
        raise ConfigError("--replicas starts its own replicas (deploy/compose.yaml): leave out --host")
    grpc = [name for name in args.encodings if get_encoding(name).protocol == "grpc"]
    if grpc:
        # gRPC goes to one --grpc-target, not spread over the replicas: it would measure one replica.
        raise ConfigError(f"--replicas spreads REST requests only: leave out {', '.join(grpc)}")
    counts = sorted(set(args.replicas))
    if counts[0] != 1:
        counts = [1, *counts]  # the prediction is N x the 1-replica capacity: measure it
    image = args.serving_image or os.environ.get("SERVING_IMAGE") or "tensorflow/serving"
    model_dir = args.model_base_path or Path("models") / args.model_name
    args.host = "http://127.0.0.1:1"  # replaced per replica count below; config_from_args needs one
    base = replace(config_from_args(args), wait_ready_s=READY_WAIT_S)
    measured: dict[int, tuple[Path, list[CapacityResult]]] = {}
    with ComposeServing(image=image, model_dir=model_dir, model_name=args.model_name, cpus=args.serving_cpus) as c:
        for count in counts:
            urls = c.scale(count)
            print(f"capacity: {count} replica(s) of {image} at {args.serving_cpus:g} CPUs each: {', '.join(urls)}",
                  file=sys.stderr)  # fmt: skip
            config = replace(base, host=",".join(urls))
            run_dir, results = run_capacity_config(config, args.out)
            measured[count] = (run_dir, results)
            print("\n".join(answer_lines(results, config)))
            print(f"run: {run_dir}")
    table = scaling_table(measured)
    last = measured[max(measured)][0]
    replace_atomically(last / SCALING_FILE, lambda tmp: table.to_csv(tmp, index=False, float_format="%.6g"))
    runs.update_meta(
        last,
        scaling={
            "replicas": counts,
            "serving_image": image,
            "serving_cpus": args.serving_cpus,
            "rows": table.to_dict(orient="records"),
        },
    )
    print("\n".join(scaling_lines(table, base, args.serving_cpus)))
    print(f"scaling: {last / SCALING_FILE}")
    return 0
