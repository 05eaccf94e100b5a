"""``tfsbench compare RUN_A RUN_B``: the same cells of two runs side by side, with ratios.

For before/after (a code change, a batching setting) and server-vs-server comparisons.
Ratios are B/A: latency ratio < 1 and throughput ratio > 1 mean B is better. Prints the table,
and writes ``compare.html`` (self-contained, overlay figures embedded) plus ``compare.csv``
into ``--out`` (default: ``RUN_B/compare-<run A id>/``). Warns, on stderr and in the page,
when the machines or server kinds differ: timings from different hosts rarely compare.
Two capacity runs (both with capacity.csv) compare their capacity answers instead
(reports.compare_capacity); a capacity run against a sweep says so and compares cells as above.
"""

from __future__ import annotations

import html

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from bench.errors import ResultsError
from reports.data import RunData
from reports.figures import batch_axis, encoding_colors, plain_log
from reports.page import CSS, img_tag

RATIO_COLUMNS = ("p50_ms", "p99_ms", "images_per_s", "rps", "payload_bytes_mean", "encode_us_mean")


def _cells(d: RunData) -> set[tuple[int, str]]:
    return set(zip(d.summary["batch"], d.summary["encoding"], strict=True))


def by_batch(a: RunData, b: RunData) -> bool:
    """Whether the runs pair up by batch size alone: no (batch, encoding) cell in common, and each
    run has one encoding per batch size (e.g. a REST row-orjson sweep against a gRPC
    grpc-tensor-content one: the same load, another protocol)."""
    if _cells(a) & _cells(b):
        return False
    return all(d.summary.groupby("batch")["encoding"].nunique().max() == 1 for d in (a, b) if not d.summary.empty)


def comparison_table(a: RunData, b: RunData) -> pd.DataFrame:
    """One row per (batch, encoding) present in both runs: A, B and B/A for each ratio column.

    Runs with no cell in common that each send one encoding per batch size (:func:`by_batch`)
    pair up by batch size; the row's cell then names both encodings (``b16 row-orjson -> grpc-tensor-content``).
    """
    keys = ["batch"] if by_batch(a, b) else ["batch", "encoding"]
    cols = [*dict.fromkeys([*keys, "encoding", "protocol", "cell", *RATIO_COLUMNS, "saturated", "requests"])]
    left = a.summary[[c for c in cols if c in a.summary]]
    right = b.summary[[c for c in cols if c in b.summary]]
    merged = left.merge(right, on=keys, suffixes=("_a", "_b"), how="inner")
    if merged.empty:
        raise ResultsError(f"runs {a.run.run_id} and {b.run.run_id} have no (batch, encoding) cell in common")
    out = merged[keys].copy()
    if keys == ["batch"]:
        out["encoding"] = merged["encoding_a"] + " -> " + merged["encoding_b"]
        out["cell"] = "b" + merged["batch"].astype(str) + " " + out["encoding"]
    else:
        out["cell"] = merged["cell_a"]
    for col in RATIO_COLUMNS:
        out[f"{col}_a"] = merged[f"{col}_a"]
        out[f"{col}_b"] = merged[f"{col}_b"]
        out[f"{col}_ratio"] = merged[f"{col}_b"] / merged[f"{col}_a"].where(merged[f"{col}_a"] != 0)
    out["saturated_a"] = merged["saturated_a"].astype(bool)
    out["saturated_b"] = merged["saturated_b"].astype(bool)
    return out.sort_values(["batch", "encoding"], kind="stable").reset_index(drop=True)


def warnings_for(a: RunData, b: RunData, per_cell: bool = True) -> list[str]:
    """Reasons the two runs may not be comparable (``per_cell=False``: machine, server and
    completeness only, for capacity runs whose probe cells are not what is compared)."""
    notes = []
    if a.run.machine_id != b.run.machine_id:
        notes.append(f"different machines: A {a.run.machine_id}; B {b.run.machine_id}")
    if a.run.server_kind != b.run.server_kind:
        notes.append(f"different server kinds: A {a.run.server_kind}, B {b.run.server_kind}")
    for label, d in (("A", a), ("B", b)):
        if d.run.incomplete:
            notes.append(f"run {label} ({d.run.run_id}) is incomplete: {d.run.incomplete_reason}")
        if not per_cell:
            continue
        sat = d.summary[d.summary["saturated"].astype(bool)]
        if not sat.empty:
            notes.append(f"run {label} has client-saturated cells: {', '.join(sat['cell'].astype(str))}")
    if not per_cell:
        return notes
    if by_batch(a, b):
        protocols = [", ".join(sorted(set(d.summary.get("protocol", pd.Series(["rest"])).astype(str)))) for d in (a, b)]
        notes.append(
            f"no (batch, encoding) cell in common: cells paired by batch size (A {protocols[0]}, B {protocols[1]})"
        )
        return notes
    only_a = _cells(a) - _cells(b)
    if only_a:
        notes.append(f"{len(only_a)} cell(s) of A are missing from B")
    return notes


def overlay_figures(a: RunData, b: RunData) -> list[tuple[str, str, Figure]]:
    """The overlay figures of a comparison: (file stem, title, figure)."""
    encodings = sorted(set(a.summary["encoding"]) | set(b.summary["encoding"]))
    colors = encoding_colors(encodings)
    batches = list(a.summary["batch"]) + list(b.summary["batch"])
    figs = []
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), dpi=100, sharey=True)
    for ax, pct in zip(axes, ("p50", "p99"), strict=True):
        for label, d, style in (("A", a, "-"), ("B", b, "--")):
            for enc, g in d.summary.groupby("encoding"):
                g = g.sort_values("batch")
                ax.plot(g["batch"], g[f"{pct}_ms"], style, marker="o", color=colors[enc], label=f"{label}: {enc}")
        batch_axis(ax, batches)
        ax.set_yscale("log")
        plain_log(ax.yaxis)
        ax.set_title(f"{pct} latency: A solid, B dashed")
    axes[0].set_ylabel("latency (ms, log scale)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    figs.append(("overlay_latency", "Latency, A vs B", fig))
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    for label, d, style in (("A", a, "-"), ("B", b, "--")):
        for enc, g in d.summary.groupby("encoding"):
            g = g.sort_values("batch")
            ax.plot(g["batch"], g["images_per_s"], style, marker="o", color=colors[enc], label=f"{label}: {enc}")
    batch_axis(ax, batches)
    ax.set_ylabel("throughput (images/s)")
    ax.set_ylim(bottom=0)
    ax.set_title("Throughput: A solid, B dashed")
    ax.legend(fontsize=7)
    fig.tight_layout()
    figs.append(("overlay_throughput", "Throughput, A vs B", fig))
    return figs


def format_table(table: pd.DataFrame) -> str:
    """Plain-text table for the terminal."""
    head = f"{'cell':<24}{'p50 A':>9}{'p50 B':>9}{'B/A':>7}{'p99 A':>9}{'p99 B':>9}{'B/A':>7}"
    head += f"{'img/s A':>10}{'img/s B':>10}{'B/A':>7}"
    lines = [head]
    for _, r in table.iterrows():
        flag = " *" if r["saturated_a"] or r["saturated_b"] else ""
        lines.append(
            f"{r['cell']:<24}{r['p50_ms_a']:>9.2f}{r['p50_ms_b']:>9.2f}{r['p50_ms_ratio']:>7.2f}"
            f"{r['p99_ms_a']:>9.2f}{r['p99_ms_b']:>9.2f}{r['p99_ms_ratio']:>7.2f}"
            f"{r['images_per_s_a']:>10.1f}{r['images_per_s_b']:>10.1f}{r['images_per_s_ratio']:>7.2f}{flag}"
        )
    if any(table["saturated_a"] | table["saturated_b"]):
        lines.append("* client saturated in A or B: that cell measures the load generator")
    return "\n".join(lines)


def render_html(
    a: RunData, b: RunData, table: pd.DataFrame, notes: list[str], pngs: list[tuple[str, str, bytes]]
) -> str:
    def cell(v: object, spec: str = ".2f") -> str:
        if isinstance(v, float):
            return "–" if pd.isna(v) else format(v, spec)
        return html.escape(str(v))

    heads = ["cell"] + [
        f"{c} {s}" for c in ("p50_ms", "p99_ms", "images_per_s", "payload_bytes_mean") for s in ("A", "B", "B/A")
    ]
    rows = []
    for _, r in table.iterrows():
        vals = [f'<td class="l">{cell(r["cell"])}</td>']
        for c in ("p50_ms", "p99_ms", "images_per_s", "payload_bytes_mean"):
            vals += [
                f"<td>{cell(r[f'{c}_a'])}</td>",
                f"<td>{cell(r[f'{c}_b'])}</td>",
                f"<td><b>{cell(r[f'{c}_ratio'])}</b></td>",
            ]
        sat = "sat" if r["saturated_a"] or r["saturated_b"] else ""
        rows.append(f'<tr class="{sat}">{"".join(vals)}</tr>')
    warn = "".join(f'<div class="banner warn">{html.escape(n)}</div>' for n in notes)
    figs = "".join(f'<figure id="fig-{n}"><h3>{html.escape(t)}</h3>{img_tag(p, t)}</figure>' for n, t, p in pngs)
    desc = lambda d: f"{d.run.run_id} ({d.run.server_kind}, {d.run.machine_id})"  # noqa: E731
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>tfsbench compare {html.escape(a.run.run_id)} vs {html.escape(b.run.run_id)}</title><style>{CSS}</style></head>
<body><h1>tfsbench compare</h1><p class="sub">A = {html.escape(desc(a))}<br>B = {html.escape(desc(b))}<br>
Ratios are B/A: latency below 1 and throughput above 1 mean B is better.</p>{warn}
<div class="scroll"><table id="compare"><tr>{"".join(f"<th>{html.escape(h)}</th>" for h in heads)}</tr>
{"".join(rows)}</table></div>{figs}</body></html>
"""
