"""``tfsbench report`` and ``tfsbench compare``: the commands over ``reports/``, which builds the pages."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from bench.errors import ResultsError
from bench.store import runs
from bench.store.runs import Run
from reports.compare import comparison_table, format_table, overlay_figures, render_html, warnings_for
from reports.compare_capacity import (
    capacity_comparison_table,
    capacity_notes,
    fig_capacity_overlay,
    format_capacity_table,
    has_capacity,
    read_capacity,
    render_capacity_html,
)
from reports.compare_tune import format_tune_table, render_tune_html, tune_comparison_table, tune_notes
from reports.data import RunData, load_run_data
from reports.page import png_bytes
from reports.report import build_report
from reports.tune_report import build_tune_report, is_tune_run, read_tune


def run_report(args: argparse.Namespace) -> int:
    """``tfsbench report RUN_DIR``: (re)build summary.csv, figures and report.html; print where they are."""
    if is_tune_run(args.run_dir):
        print(f"report: {build_tune_report(args.run_dir)}")
        return 0
    result = build_report(args.run_dir)
    note = " (incomplete run)" if result.incomplete else ""
    print(f"report: {result.html_path}{note}")
    print(
        f"summary: {result.summary_path}; figures: {len(result.figure_paths)} in {result.html_path.parent / 'figures'}"
    )
    return 0


def run_compare(args: argparse.Namespace) -> int:
    """``tfsbench compare RUN_A RUN_B``: the table on stdout, compare.html/.csv and overlays in ``--out``."""
    tune = [is_tune_run(p) for p in (args.run_a, args.run_b)]
    if all(tune):
        return _run_tune_compare(runs.load_run(args.run_a), runs.load_run(args.run_b), args.out)
    if any(tune):
        raise ResultsError("one run is a tune run and the other is not: compare two tune runs, or two sweeps")
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
            pngs.append((name, title, _write_figure(fig, out / f"{name}.png")))
        table.to_csv(out / "compare.csv", index=False, float_format="%.10g")
        (out / "compare.html").write_text(render_html(a, b, table, notes, pngs), encoding="utf-8")
    except OSError as exc:
        raise ResultsError(f"cannot write the comparison into {out}: {exc.strerror or exc}") from exc
    print(f"compare: {out / 'compare.html'}")
    return 0


def _write_figure(fig: Figure, path: Path) -> bytes:
    png = png_bytes(fig)
    plt.close(fig)
    path.write_bytes(png)
    return png


def _run_capacity_compare(a: RunData, b: RunData, out: Path | None) -> int:
    """Both runs are capacity searches: compare their capacity.csv answers, overlay their curves."""
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


def _run_tune_compare(a: Run, b: Run, out: Path | None) -> int:
    """Both runs are tunes: their configurations side by side (tune.csv), fronts and recommendations."""
    table = tune_comparison_table(read_tune(a.path), read_tune(b.path))
    notes = tune_notes(a, b)
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    print(f"A = {a.run_id}   B = {b.run_id}   (tune runs: images/s within the SLO per configuration, ratios B/A)")
    print(format_tune_table(table))
    out = out or (b.path / f"compare-{a.run_id}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "compare.csv", index=False, float_format="%.10g")
        (out / "compare.html").write_text(render_tune_html(a, b, table, notes), encoding="utf-8")
    except OSError as exc:
        raise ResultsError(f"cannot write the comparison into {out}: {exc.strerror or exc}") from exc
    print(f"compare: {out / 'compare.html'}")
    return 0
