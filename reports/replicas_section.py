"""The report's per-replica section, for runs against several replicas (``--host URL1,URL2,...``).

Per cell and replica (the records' ``target`` column): requests and their share, errors,
client-side p50/p99 and images/s, and beside them the replica's own Prometheus count and mean
latency (meta.json's ``server_by_replica``). A replica that served more than
:data:`IMBALANCE_RATIO` times its fair share, or less than its inverse, gets a banner: the
capacity plan's per-replica figure assumes an even spread.

Usage (``reports.report.build_report`` does this for every run: reports.data.load_run_data
feeds a :class:`ReplicaAccumulator` chunk by chunk, so every row counts whatever the run's size)::

    fragment = render_replicas(data.replicas)             # "" for a run with one target
    fragment = replicas_section(run, records)             # the same from records in memory
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import pandas as pd

from bench.store.runs import Run
from bench.store.summary import failed_mask
from reports.page import fmt

IMBALANCE_RATIO = 1.25


def imbalance(shares: dict[str, float]) -> str | None:
    """Why the load over replicas was uneven (``shares``: requests per replica), or None."""
    total = sum(shares.values())
    if len(shares) < 2 or total <= 0:
        return None
    fair = total / len(shares)
    ratio = {name: n / fair for name, n in shares.items()}
    off = {name: r for name, r in ratio.items() if r > IMBALANCE_RATIO or r < 1 / IMBALANCE_RATIO}
    if not off:
        return None
    worst = max(off, key=lambda name: abs(off[name] - 1))
    return (
        f"load uneven over {len(shares)} replicas: {worst} served {off[worst]:.2f}x its fair share "
        f"({shares[worst]:.0f} of {total:.0f} requests)"
    )


class ReplicaAccumulator:
    """Per (cell, replica) counts fed in records chunks (as reports.data.load_run_data streams
    them): requests, errors, images and time span, and the successful latencies for exact
    p50/p99 (one float64 per successful row, as bench.store.summary.SummaryAccumulator keeps)."""

    def __init__(self) -> None:
        self._groups: dict[tuple[str, str], dict[str, Any]] = {}

    def add(self, chunk: pd.DataFrame) -> None:
        if chunk.empty or "target" not in chunk:
            return
        failed = failed_mask(chunk).to_numpy()
        latency = chunk["latency_ms"].to_numpy(dtype=float)
        start = chunk["t_start"].to_numpy(dtype=float)
        batch = chunk["batch"].to_numpy(dtype=float)
        keys = pd.DataFrame(
            {"cell": chunk["cell"].astype(str).to_numpy(), "target": chunk["target"].astype(str).to_numpy()}
        )
        for (cell, target), rows in keys.groupby(["cell", "target"], sort=False).indices.items():
            if not target:
                continue  # rows from before the column: which replica answered is not known
            g = self._groups.setdefault(
                (str(cell), str(target)),
                {"requests": 0, "errors": 0, "images": 0.0, "first": np.inf, "last": -np.inf, "ok": []},
            )
            good = rows[~failed[rows]]
            g["requests"] += rows.size
            g["errors"] += int(failed[rows].sum())
            g["images"] += math.fsum(batch[good])
            g["first"] = min(g["first"], float(start[rows].min()))
            g["last"] = max(g["last"], float(start[rows].max()))
            g["ok"].append(latency[good])

    def table(self, run: Run) -> pd.DataFrame:
        """One row per (cell, replica): what the client saw of it and what it counted itself;
        empty unless --host named two or more replicas (meta.json's target.replicas). Counting the
        targets the rows name is not enough: a one-server run that mixes REST and gRPC names two
        (the REST host and the gRPC target)."""
        if len(run.target.get("replicas") or []) < 2:
            return pd.DataFrame()
        servers = {str(c.get("cell")): c.get("server_by_replica") or {} for c in run.cells}
        rows: list[dict[str, Any]] = []
        for (cell, target), g in sorted(self._groups.items()):
            ok = np.concatenate(g["ok"]) if g["ok"] else np.empty(0)
            span = g["last"] - g["first"] if g["requests"] > 1 else np.nan
            server = servers.get(cell, {}).get(target, {})
            rows.append(
                {
                    "cell": cell,
                    "replica": target,
                    "requests": g["requests"],
                    "errors": g["errors"],
                    "p50_ms": float(np.quantile(ok, 0.5)) if ok.size else np.nan,
                    "p99_ms": float(np.quantile(ok, 0.99)) if ok.size else np.nan,
                    "images_per_s": g["images"] / span if span and span > 0 else np.nan,
                    "server_requests": server.get("requests", np.nan),
                    "server_latency_mean_ms": server.get("latency_mean_ms", np.nan),
                }
            )
        table = pd.DataFrame(rows)
        table["share_pct"] = 100.0 * table["requests"] / table.groupby("cell")["requests"].transform("sum")
        return table


def replica_table(run: Run, records: pd.DataFrame) -> pd.DataFrame:
    """:meth:`ReplicaAccumulator.table` of records already in memory."""
    acc = ReplicaAccumulator()
    acc.add(records)
    return acc.table(run)


def replicas_section(run: Run, records: pd.DataFrame) -> str:
    """The HTML fragment of records already in memory; "" with one target."""
    return render_replicas(replica_table(run, records))


def render_replicas(table: pd.DataFrame) -> str:
    """The HTML fragment: imbalance banners, then the per-replica table; "" for an empty table."""
    if table.empty:
        return ""
    banners = []
    for cell, group in table.groupby("cell", sort=True):
        why = imbalance(dict(zip(group["replica"], group["requests"], strict=True)))
        if why:
            banners.append(f'<div class="banner warn" id="replica-imbalance">{html.escape(f"{cell}: {why}")}</div>')
    columns = (
        ("cell", "cell", "s"),
        ("replica", "replica", "s"),
        ("requests", "requests", "d"),
        ("share_pct", "share %", ".1f"),
        ("errors", "errors", "d"),
        ("p50_ms", "p50 ms", ".3g"),
        ("p99_ms", "p99 ms", ".3g"),
        ("images_per_s", "images/s", ".4g"),
        ("server_requests", "server requests", ".0f"),
        ("server_latency_mean_ms", "server mean ms", ".3g"),
    )
    head = "".join(f'<th class="{"l" if f == "s" else ""}">{h}</th>' for _, h, f in columns)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"l" if f == "s" else ""}">{html.escape(fmt(r[k], f))}</td>' for k, _, f in columns)
        + "</tr>"
        for _, r in table.iterrows()
    )
    return (
        '<h2 id="replicas">Per replica</h2>\n<p class="sub">Each user keeps one replica (--host URL1,URL2,...); '
        "rows by the replica that answered (the records' target), the server columns from that replica's own "
        f"Prometheus metrics. A share off its fair share by more than {IMBALANCE_RATIO:g}x is flagged.</p>\n"
        + "\n".join(banners)
        + f'<div class="scroll"><table id="replica-table"><tr>{head}</tr>{body}</table></div>'
    )
