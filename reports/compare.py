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

import argparse
import base64
import html
import sys
from pathlib import Path

import pandas as pd

from bench.errors import ResultsError
from reports.data import RunData, load_run_data

RATIO_COLUMNS = ("p50_ms", "p99_ms", "images_per_s", "rps", "payload_bytes_mean", "encode_us_mean")


def comparison_table(a: RunData, b: RunData) -> pd.DataFrame:
    """One row per (batch, encoding) present in both runs: A, B and B/A for each ratio column."""
    keys = ["batch", "encoding"]
    cols = [*keys, "cell", *RATIO_COLUMNS, "saturated", "requests"]
    left = a.summary[[c for c in cols if c in a.summary]]
    right = b.summary[[c for c in cols if c in b.summary]]
    merged = left.merge(right, on=keys, suffixes=("_a", "_b"), how="inner")
    if merged.empty:
        raise ResultsError(f"runs {a.run.run_id} and {b.run.run_id} have no (batch, encoding) cell in common")
    out = merged[keys].copy()
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
    only_a = set(zip(a.summary["batch"], a.summary["encoding"], strict=True)) - set(
        zip(b.summary["batch"], b.summary["encoding"], strict=True)
    )
    if only_a:
        notes.append(f"{len(only_a)} cell(s) of A are missing from B")
    return notes


def overlay_figures(a: RunData, b: RunData) -> list[tuple[str, str, object]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from reports.figures import _batch_axis, _plain_log, encoding_colors

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
        _batch_axis(ax, batches)
        ax.set_yscale("log")
        _plain_log(ax.yaxis)
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
    _batch_axis(ax, batches)
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
    from reports.report import CSS

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
    figs = "".join(
        f'<figure id="fig-{n}"><h3>{html.escape(t)}</h3><img alt="{html.escape(t)}" '
        f'src="data:image/png;base64,{base64.b64encode(p).decode("ascii")}"></figure>'
        for n, t, p in pngs
    )
    desc = lambda d: f"{d.run.run_id} ({d.run.server_kind}, {d.run.machine_id})"  # noqa: E731
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>tfsbench compare {html.escape(a.run.run_id)} vs {html.escape(b.run.run_id)}</title><style>{CSS}</style></head>
<body><h1>tfsbench compare</h1><p class="sub">A = {html.escape(desc(a))}<br>B = {html.escape(desc(b))}<br>
Ratios are B/A: latency below 1 and throughput above 1 mean B is better.</p>{warn}
<div class="scroll"><table id="compare"><tr>{"".join(f"<th>{html.escape(h)}</th>" for h in heads)}</tr>
{"".join(rows)}</table></div>{figs}</body></html>
"""


def run_compare(args: argparse.Namespace) -> int:
    import io

    import matplotlib.pyplot as plt

    from reports.compare_capacity import has_capacity

    a = load_run_data(args.run_a)
    b = load_run_data(args.run_b)
    capacity = {label: has_capacity(d.run) for label, d in (("A", a), ("B", b))}
    if all(capacity.values()):
        return _run_capacity_compare(a, b, args.out)
    notes = []
    if any(capacity.values()):
        which = "A" if capacity["A"] else "B"
        notes.append(
            f"only run {which} is a capacity run (has capacity.csv): comparing the (batch, encoding) cells of "
            "both runs, each probe of the capacity run against the other run's cell"
        )
    table = comparison_table(a, b)
    notes += warnings_for(a, b)
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    print(f"A = {a.run.run_id}   B = {b.run.run_id}   (ratios B/A)")
    print(format_table(table))
    out: Path = args.out or (b.run.path / f"compare-{a.run.run_id}")
    pngs = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, title, fig in overlay_figures(a, b):
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
            plt.close(fig)
            (out / f"{name}.png").write_bytes(buf.getvalue())
            pngs.append((name, title, buf.getvalue()))
        table.to_csv(out / "compare.csv", index=False, float_format="%.10g")
        (out / "compare.html").write_text(render_html(a, b, table, notes, pngs), encoding="utf-8")
    except OSError as exc:
        raise ResultsError(f"cannot write the comparison into {out}: {exc.strerror or exc}") from exc
    print(f"compare: {out / 'compare.html'}")
    return 0


def _write_figure(fig, path: Path) -> bytes:
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def _run_capacity_compare(a: RunData, b: RunData, out: Path | None) -> int:
    """Both runs are capacity searches: compare their capacity.csv answers, overlay their curves."""
    from reports.compare_capacity import (
        capacity_comparison_table,
        capacity_notes,
        fig_capacity_overlay,
        format_capacity_table,
        read_capacity,
        render_capacity_html,
    )

    cap_a, cap_b = read_capacity(a.run), read_capacity(b.run)
    table = capacity_comparison_table(cap_a, cap_b)
    notes = warnings_for(a, b, per_cell=False) + capacity_notes(a, b, cap_a, cap_b)
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    print(f"A = {a.run.run_id}   B = {b.run.run_id}   (capacity runs: capacity.csv compared, ratios B/A)")
    print(format_capacity_table(table))
    out = out or (b.run.path / f"compare-{a.run.run_id}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        name = "overlay_capacity"
        png = _write_figure(fig_capacity_overlay(a, b, cap_a, cap_b), out / f"{name}.png")
        table.to_csv(out / "compare.csv", index=False, float_format="%.10g")
        page = render_capacity_html(a, b, table, notes, [(name, "Capacity curves, A vs B", png)])
        (out / "compare.html").write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ResultsError(f"cannot write the comparison into {out}: {exc.strerror or exc}") from exc
    print(f"compare: {out / 'compare.html'}")
    return 0
