"""``tfsbench compare`` for two capacity runs: capacity.csv side by side, not probe against probe.

A capacity run's cells are probes at searched rates (``b16-row-orjson@42.5rps``); two searches
rarely probe the same rates, so joining their summaries on (batch, encoding) would pair every
probe of A with every probe of B. What the two runs answer is capacity.csv: per (batch,
encoding), the highest rate that met the SLO. This module puts those side by side with B/A
ratios (capacity ratio > 1 and replicas ratio < 1 mean B is better), and overlays the two
throughput-vs-latency curves from probes.csv (A solid, B dashed).

Usage (``reports.compare.run_compare`` does this when both runs have capacity.csv)::

    table = capacity_comparison_table(read_capacity(a.run), read_capacity(b.run))
"""

from __future__ import annotations

import html
import math

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from bench.errors import ResultsError
from bench.store.runs import CAPACITY_FILE, PROBES_FILE, Run
from reports.capacity_section import read_table, run_slo
from reports.data import RunData
from reports.figures import plain_log
from reports.page import CSS, fmt, img_tag

KEYS = ["batch", "encoding"]
# capacity.csv column, short label for the terminal and the page, number format
CAPACITY_RATIO_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("max_rps", "max req/s", ".1f"),
    ("max_images_per_s", "max images/s", ".1f"),
    ("latency_ms_at_max", "latency at max ms", ".1f"),
    ("replicas", "replicas", ".0f"),
)


def has_capacity(run: Run) -> bool:
    return (run.path / CAPACITY_FILE).is_file()


def read_capacity(run: Run) -> pd.DataFrame:
    """capacity.csv of ``run`` (ResultsError when it has no row or lacks the contract's columns)."""
    frame = read_table(run.path / CAPACITY_FILE)
    missing = [c for c in (*KEYS, *(c for c, *_ in CAPACITY_RATIO_COLUMNS)) if c not in frame.columns]
    if frame.empty or missing:
        why = f"lacks {', '.join(missing)}" if missing else "has no row"
        raise ResultsError(f"{run.path / CAPACITY_FILE} {why}: not a finished capacity search")
    return frame


def read_probes(run: Run) -> pd.DataFrame:
    path = run.path / PROBES_FILE
    return read_table(path) if path.is_file() else pd.DataFrame()


def capacity_comparison_table(cap_a: pd.DataFrame, cap_b: pd.DataFrame) -> pd.DataFrame:
    """One row per (batch, encoding) searched in both runs: A, B and B/A for each capacity column.

    A ratio is empty where A's value is 0 or missing (no rate met the SLO in A, no target set)."""
    cols = [*KEYS, *(c for c, *_ in CAPACITY_RATIO_COLUMNS)]
    merged = cap_a[cols].merge(cap_b[cols], on=KEYS, suffixes=("_a", "_b"), how="inner")
    if merged.empty:
        raise ResultsError("the two capacity runs searched no (batch, encoding) cell in common")
    out = merged[KEYS].copy()
    for col, *_ in CAPACITY_RATIO_COLUMNS:
        a = pd.to_numeric(merged[f"{col}_a"], errors="coerce").astype(float)
        b = pd.to_numeric(merged[f"{col}_b"], errors="coerce").astype(float)
        out[f"{col}_a"] = a
        out[f"{col}_b"] = b
        out[f"{col}_ratio"] = b / a.where(a > 0)
    return out.sort_values(KEYS, kind="stable").reset_index(drop=True)


def capacity_notes(a: RunData, b: RunData, cap_a: pd.DataFrame, cap_b: pd.DataFrame) -> list[str]:
    """Why the two answers may not compare: SLO, target or headroom differ, cells searched in one only."""
    notes = []
    slo_a, slo_b = run_slo(a.run)[0], run_slo(b.run)[0]
    if slo_a != slo_b:
        notes.append(f"different SLOs: A {slo_a}, B {slo_b} (capacity is the highest rate meeting each run's own)")
    for key, what in (("target_images_per_s", "targets (images/s)"), ("headroom", "headrooms")):
        va = (a.run.meta.get("config") or {}).get(key)
        vb = (b.run.meta.get("config") or {}).get(key)
        if va != vb:
            notes.append(f"different {what}: A {va}, B {vb}, so the replicas columns answer different questions")
    cells_a = set(zip(cap_a["batch"], cap_a["encoding"], strict=True))
    cells_b = set(zip(cap_b["batch"], cap_b["encoding"], strict=True))
    for label, only in (("A", cells_a - cells_b), ("B", cells_b - cells_a)):
        if only:
            listed = ", ".join(f"b{bb} {e}" for bb, e in sorted(only))
            notes.append(f"searched in {label} only: {listed}")
    return notes


def format_capacity_table(table: pd.DataFrame) -> str:
    """Plain-text table for the terminal."""
    widths = {"max_rps": 9, "max_images_per_s": 10, "latency_ms_at_max": 10, "replicas": 8}
    short = {"max_rps": "req/s", "max_images_per_s": "img/s", "latency_ms_at_max": "lat ms", "replicas": "repl"}
    head = f"{'batch':>5} {'encoding':<18}"
    for col, *_ in CAPACITY_RATIO_COLUMNS:
        w = widths[col]
        head += f"  {short[col] + ' A':>{w}}{short[col] + ' B':>{w}}{'B/A':>6}"
    lines = [head]
    for _, r in table.iterrows():
        line = f"{int(r['batch']):>5} {r['encoding']!s:<18}"
        for col, _, spec in CAPACITY_RATIO_COLUMNS:
            w = widths[col]
            line += f"{fmt(r[f'{col}_a'], spec):>{w}}{fmt(r[f'{col}_b'], spec):>{w}}{fmt(r[f'{col}_ratio'], '.2f'):>6}"
        lines.append(line)
    lines.append("capacity B/A > 1: B serves more within its SLO; replicas B/A < 1: B needs fewer")
    return "\n".join(lines)


def fig_capacity_overlay(a: RunData, b: RunData, cap_a: pd.DataFrame, cap_b: pd.DataFrame) -> Figure:
    """Each run's probes: SLO percentile vs offered images/s per (batch, encoding); A solid, B dashed."""
    probes = {"A": read_probes(a.run), "B": read_probes(b.run)}
    caps = {"A": cap_a, "B": cap_b}
    cells = sorted(
        set(zip(cap_a["batch"], cap_a["encoding"], strict=True))
        | set(zip(cap_b["batch"], cap_b["encoding"], strict=True))
    )
    colors = {cell: plt.get_cmap("tab10")(i % 10) for i, cell in enumerate(cells)}
    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=100)
    for label, style, run_data in (("A", "-", a), ("B", "--", b)):
        p = probes[label]
        if not p.empty and {"batch", "encoding", "rate_rps", "latency_pct_ms"} <= set(p.columns):
            for (batch, encoding), g in p.groupby(["batch", "encoding"], sort=True):
                g = g.sort_values("rate_rps")
                color = colors.get((batch, encoding), "grey")
                latency = g["latency_pct_ms"].where(g["latency_pct_ms"] > 0)
                ax.plot(g["rate_rps"] * batch, latency, style, marker="o" if label == "A" else "s", markersize=4,
                        color=color, alpha=0.8, label=f"{label}: batch {batch} {encoding}")  # fmt: skip
        cap = caps[label]
        met = cap[pd.to_numeric(cap["max_rps"], errors="coerce") > 0]
        ax.scatter(met["max_images_per_s"], met["latency_ms_at_max"], marker="*", s=220, zorder=4,
                   color=[colors[(bb, e)] for bb, e in zip(met["batch"], met["encoding"], strict=True)],
                   edgecolors="black" if label == "A" else "white", linewidths=0.8)  # fmt: skip
        slo_text, _, limit_ms = run_slo(run_data.run)
        same_slo = run_slo(a.run) == run_slo(b.run)
        if not math.isnan(limit_ms) and not (same_slo and label == "B"):  # one line when both share the SLO
            who = "" if same_slo else f"{label}: "
            ax.axhline(limit_ms, color="#d93025", linestyle=style, linewidth=1.0, label=f"{who}SLO {slo_text}")
    ax.scatter([], [], marker="*", s=120, color="grey", edgecolors="black", label="operating point (highest pass)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log(ax.xaxis)
    plain_log(ax.yaxis)
    ax.set_xlabel("offered load (images/s = requests/s x batch size, log scale)")
    ax.set_ylabel("SLO percentile latency from intended send (ms, log scale)")
    ax.set_title("Capacity curves: A solid, B dashed")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def render_capacity_html(
    a: RunData, b: RunData, table: pd.DataFrame, notes: list[str], pngs: list[tuple[str, str, bytes]]
) -> str:
    heads = ["batch", "encoding"] + [f"{h} {s}" for _, h, _ in CAPACITY_RATIO_COLUMNS for s in ("A", "B", "B/A")]
    rows = []
    for _, r in table.iterrows():
        vals = [f"<td>{int(r['batch'])}</td>", f'<td class="l">{html.escape(str(r["encoding"]))}</td>']
        for col, _, spec in CAPACITY_RATIO_COLUMNS:
            vals += [
                f"<td>{html.escape(fmt(r[f'{col}_a'], spec))}</td>",
                f"<td>{html.escape(fmt(r[f'{col}_b'], spec))}</td>",
                f"<td><b>{html.escape(fmt(r[f'{col}_ratio'], '.2f'))}</b></td>",
            ]
        rows.append(f"<tr>{''.join(vals)}</tr>")
    warn = "".join(f'<div class="banner warn">{html.escape(n)}</div>' for n in notes)
    figs = "".join(
        f'<figure id="fig-{n}"><h3>{html.escape(t)}</h3>{img_tag(p, t)}<figcaption>One point per probe (its SLO '
        "percentile at its offered load), stars at each run's capacity; the horizontal lines are the SLOs."
        "</figcaption></figure>"
        for n, t, p in pngs
    )
    desc = lambda d: f"{d.run.run_id} ({d.run.server_kind}, {d.run.machine_id}, SLO {run_slo(d.run)[0]})"  # noqa: E731
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>tfsbench compare (capacity) {html.escape(a.run.run_id)} vs {html.escape(b.run.run_id)}</title>
<style>{CSS}</style></head>
<body><h1>tfsbench compare: capacity</h1><p class="sub">A = {html.escape(desc(a))}<br>B = {html.escape(desc(b))}<br>
Both runs are capacity searches: their capacity.csv answers are compared per (batch, encoding), not their probes.
Ratios are B/A: capacity above 1 and replicas below 1 mean B is better.</p>{warn}
<div class="scroll"><table id="compare-capacity"><tr>{"".join(f"<th>{html.escape(h)}</th>" for h in heads)}</tr>
{"".join(rows)}</table></div>{figs}</body></html>
"""
