"""``tfsbench report RUN_DIR``: summary.csv, figures/*.png and one self-contained report.html.

The page embeds every figure as a base64 PNG and carries its own CSS: it opens offline, from
an e-mail attachment or a CI artefact. It works on an interrupted run (whatever was recorded
is reported, under a banner saying the run is incomplete and why).

Usage::

    tfsbench report runs/latest
    python -c "from reports.report import build_report; build_report(Path('runs/latest'))"
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from bench.errors import ResultsError
from reports.answer import Answer, run_answer
from reports.capacity_section import capacity_section
from reports.data import SATURATED_CPU_PCT, RunData, load_run_data
from reports.figures import FIGURES, SPLIT_FIGURE, make_figures
from reports.metadata import metadata_rows
from reports.page import CSS, fmt, img_tag, png_bytes
from reports.replicas_section import render_replicas
from reports.signature_line import signature_html

# The summary is two tables so that neither scrolls sideways on a ~1400 px page: what was measured
# (with the trust verdict, which colours the row), then the inputs of that verdict and the server's view.
SUMMARY_DISPLAY: tuple[tuple[str, str, str], ...] = (
    # column, header, format
    ("cell", "cell", "s"),
    ("batch", "batch", "d"),
    ("encoding", "encoding", "s"),
    ("protocol", "protocol", "s"),
    ("trust", "trust", "s"),
    ("requests", "requests", "d"),
    ("errors", "errors", "d"),
    ("offered_rps", "offered req/s", ".4g"),
    ("rps", "req/s", ".1f"),
    ("images_per_s", "images/s", ".1f"),
    ("p50_ms", "p50 ms", ".2f"),
    ("p95_ms", "p95 ms", ".2f"),
    ("p99_ms", "p99 ms", ".2f"),
    ("max_ms", "max ms", ".2f"),
    ("payload_bytes_mean", "body bytes", ",.0f"),
    ("encode_us_mean", "encode µs", ".0f"),
)
DETAIL_DISPLAY: tuple[tuple[str, str, str], ...] = (
    ("cell", "cell", "s"),
    ("samples", "samples", "d"),
    ("error_p50_ms", "errors p50 ms", ".2f"),
    ("client_cpu_pct", "client CPU % (busiest process)", ".0f"),
    ("loop_lag_ms_p99", "event-loop lag p99 ms", ".1f"),
    ("late_sends", "late sends", "d"),
    ("late_busy", "late: user waited on server", "d"),
    ("late_idle", "late: generator behind", "d"),
    ("unanswered", "due, never answered", "d"),
    ("stable", "stable", "s"),
    ("windows", "windows", "d"),
    ("warmup_excluded", "warm-up excl.", "d"),
    ("latency_mean_ms", "client mean ms", ".2f"),
    ("server_latency_mean_ms", "server mean ms", ".2f"),
    ("server_runtime_mean_ms", "model run mean ms", ".2f"),
    ("server_latency_p99_ms", "server p99 ms", ".2f"),
    ("server_batch_size_mean", "server batch", ".1f"),
)


# Next to a server p99 above the client's: why it is not a contradiction, in one sentence.
SERVER_P99_NOTE = (
    '<span class="note" title="The server\'s p99 is interpolated inside Prometheus histogram buckets about 1.8x '
    "wide, so it can land up to a bucket above the true value; the client's p99 comes from every request.\">"
    "above the client's p99: Prometheus interpolates it inside 1.8x-wide buckets</span>"
)

# Percentile columns shown with their 95 % interval underneath.
CI_DISPLAYED = frozenset({"p50_ms", "p95_ms", "p99_ms"})


@dataclass(frozen=True)
class ReportResult:
    """What ``build_report`` wrote."""

    html_path: Path
    summary_path: Path
    figure_paths: tuple[Path, ...]
    incomplete: bool
    answer: tuple[str, ...] = ()  # "What this run says", for the command's last lines


def _interval_html(r: pd.Series, col: str, spec: str) -> tuple[str, bool]:
    """The 95 % interval under a percentile (``p99_ms`` -> its ``p99_ci_*``), and whether it is rough."""
    low, high = r.get(f"{col[:-3]}_ci_low_ms"), r.get(f"{col[:-3]}_ci_high_ms")
    if pd.isna(r.get(col)) or (low is None and high is None):
        return "", False
    rough = col[:-3] in str(r.get("rough") or "").split(",")
    text = f"{fmt(low, spec) if not pd.isna(low) else '?'}–{fmt(high, spec) if not pd.isna(high) else '?'}"
    title = "95% confidence interval" + (" (rough: open or wider than half the value)" if rough else "")
    return f'<span class="ci" title="{title}">{html.escape(text)}{" rough" if rough else ""}</span>', rough


def sweep_slo(data: RunData) -> tuple[float, float] | None:
    """The ``--slo`` a sweep was given (meta.json ``slo``), as (percentile, limit ms)."""
    slo = data.run.meta.get("slo") or {}
    percentile, limit = slo.get("percentile"), slo.get("limit_ms")
    if isinstance(percentile, int | float) and isinstance(limit, int | float):
        return float(percentile), float(limit)
    return None


def data_answer(data: RunData) -> Answer | None:
    """What the run says (reports.answer); None for a capacity run, whose own section answers."""
    if data.is_capacity:
        return None
    return run_answer(data.summary, sweep_slo(data), data.run.incomplete_reason, data.run.server_kind)


def answer_lines(run_path: Path) -> tuple[str, ...]:
    """What the run at ``run_path`` says, as the lines ``tfsbench sweep`` ends with (no report built)."""
    answer = data_answer(load_run_data(run_path))
    return answer.lines if answer else ()


def answer_html(answer: Answer | None) -> str:
    if answer is None:
        return ""
    head, *rest = answer.lines
    items = "".join(f"<li>{html.escape(line.strip())}</li>" for line in rest)
    return (
        f'<section class="answer" id="answer"><h2>What this run says</h2><p>{html.escape(head)}</p>'
        f'<ul>{items}</ul><p class="sub">Computed from the summary below; ★ marks each batch size\'s best '
        "cell in the tables.</p></section>"
    )


def summary_table_html(
    summary: pd.DataFrame,
    display: tuple[tuple[str, str, str], ...] = SUMMARY_DISPLAY,
    table_id: str = "summary",
    best: frozenset[str] = frozenset(),
) -> str:
    cols = [c for c in display if c[0] in summary.columns and summary[c[0]].notna().any()]
    head = "".join(f'<th class="{"l" if f == "s" else ""}">{html.escape(h)}</th>' for _, h, f in cols)
    rows = []
    for _, r in summary.iterrows():
        cells = []
        for col, _, spec in cols:
            cls = "l" if spec == "s" else ""
            if col in CI_DISPLAYED:
                interval, rough = _interval_html(r, col, spec)
                cls += " rough" if rough else ""
                cells.append(f'<td class="{cls.strip()}">{html.escape(fmt(r[col], spec))}{interval}</td>')
                continue
            if col == "trust":
                cls += (
                    " trust trust-bad"
                    if r.get("saturated")
                    else (" trust trust-ok" if r[col] == "ok" else " trust trust-note")
                )
            text = fmt(r[col], spec)
            if col == "server_latency_p99_ms" and r[col] > r.get("p99_ms", float("inf")):
                cells.append(f'<td class="{cls.strip()}">{html.escape(text)}{SERVER_P99_NOTE}</td>')
                continue
            if col == "cell" and str(r[col]) in best:
                text = f"★ {text}"
            cells.append(f'<td class="{cls.strip()}">{html.escape(text)}</td>')
        row_class = "sat" if r.get("saturated") else ("srv" if r.get("server_saturated") else "")
        row_class += " best" if str(r.get("cell")) in best else ""
        rows.append(f'<tr class="{row_class.strip()}">{"".join(cells)}</tr>')
    return f'<div class="scroll"><table id="{table_id}"><tr>{head}</tr>{"".join(rows)}</table></div>'


def meta_table_html(data: RunData) -> str:
    rows = "".join(
        f'<tr><th class="l">{html.escape(k)}</th><td>{html.escape(v)}</td></tr>' for k, v in metadata_rows(data.run)
    )
    return f'<table class="meta" id="meta">{rows}</table>'


def cells_table_html(data: RunData) -> str:
    """Per-cell sweep facts (status, Locust's count, wall time, errors) from meta.json, in the summary's
    order; "ran" is the order the cells ran in."""
    cells = data.run.cells
    if not cells:
        return "<p>meta.json lists no cells.</p>"
    position = {str(c): i for i, c in enumerate(data.summary["cell"])}
    ordered = sorted(enumerate(cells), key=lambda ic: (position.get(str(ic[1].get("cell")), len(position)), ic[0]))
    keys = (
        ("cell", "cell", "s"),
        ("status", "status", "s"),
        ("locust_requests", "Locust requests", "d"),
        ("locust_failures", "Locust failures", "d"),
        ("wall_s", "wall s", ".1f"),
        ("client_cpu_pct", "client CPU %", ".0f"),
        ("error", "error", "s"),
    )
    head = "<th>ran</th>" + "".join(f'<th class="{"l" if f == "s" else ""}">{h}</th>' for _, h, f in keys)
    body = "".join(
        f"<tr><td>{i + 1}</td>"
        + "".join(f'<td class="{"l" if f == "s" else ""}">{html.escape(fmt(c.get(k), f))}</td>' for k, _, f in keys)
        + "</tr>"
        for i, c in ordered
    )
    return f'<div class="scroll"><table id="cells"><tr>{head}</tr>{body}</table></div>'


def banners_html(data: RunData) -> str:
    run = data.run
    out = []
    if run.incomplete:
        reason = run.incomplete_reason or "unknown"
        out.append(
            f'<div class="banner incomplete" id="incomplete">Incomplete run: {html.escape(str(reason))}. '
            "Everything recorded before it stopped is reported below.</div>"
        )
    if run.meta.get("error"):
        out.append(f'<div class="banner incomplete">Run error: {html.escape(str(run.meta["error"]))}</div>')
    if run.server_kind == "embedded":
        out.append(
            '<div class="banner embedded" id="embedded">Results from the embedded server (tfsbench serve, '
            "in-process TensorFlow behind a Python HTTP server), not tensorflow/serving: use them to compare "
            "encodings and batch sizes, not as tensorflow/serving's own numbers.</div>"
        )
    elif run.server_kind == "unknown":
        out.append('<div class="banner warn">Target server kind unknown: see target.* in the metadata.</div>')
    sat = data.summary[data.summary["saturated"].astype(bool)]
    if not sat.empty:
        out.append(
            f'<div class="banner warn" id="saturated">{len(sat)} cell(s) had a saturated client (the load '
            "generator fell behind its schedule, or a process at "
            f"{SATURATED_CPU_PCT:.0f}% of a core in a closed run): "
            f"{html.escape(', '.join(sat['cell'].astype(str)))}. Their numbers measure the client, not the "
            "server: add --processes (one per core) or load machines.</div>"
        )
    if "server_saturated" in data.summary:
        srv = data.summary[data.summary["server_saturated"].fillna(False).astype(bool)]
        if not srv.empty:
            why = (
                "probes past the knee, as the capacity search intends"
                if data.is_capacity
                else "their latency is the server's queue, not its service time"
            )
            out.append(
                f'<div class="banner warn" id="server-saturated">{len(srv)} cell(s) offered more than the server '
                "answered in time (sends late because their users still waited on replies, or due sends never "
                f"answered, with the load generator on schedule): {html.escape(', '.join(srv['cell'].astype(str)))}; "
                f"{why}.</div>"
            )
    return "\n".join(out)


def render_html(data: RunData, figures: list[tuple[str, str, str, bytes | None]], extra_html: str = "") -> str:
    run = data.run
    target = run.target
    config = run.meta.get("config") or {}
    subtitle = (
        f"target {html.escape(str(target.get('host', '?')))} · server {html.escape(run.server_kind)} "
        f"{html.escape(str(target.get('server_version') or ''))} · model "
        f"{html.escape(str(target.get('model_name', '?')))}"
        f" v{html.escape(str(target.get('model_version', '?')))} · load "
        f"{html.escape(str(config.get('load', config.get('arrival', '?'))))} · "
        f"{data.recorded:,} requests recorded · created {html.escape(str(run.meta.get('created_utc', '?')))}"
    )
    answer = data_answer(data)
    best = answer.best_cells if answer else frozenset()
    figs = "\n".join(
        f'<figure id="fig-{name}"><h3>{html.escape(title)}</h3>'
        f"{img_tag(png, title)}"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        if png is not None
        else f'<p class="none" id="fig-{name}">{html.escape(caption)}</p>'
        for name, title, caption, png in figures
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tfsbench run {html.escape(run.run_id)}</title>
<style>{CSS}</style></head><body>
<h1>tfsbench run {html.escape(run.run_id)}</h1>
<p class="sub">{subtitle}</p>
{signature_html(run.meta)}
{answer_html(answer)}
{banners_html(data)}
{extra_html}
<h2>Summary per cell</h2>
<p class="sub">Percentiles from every successful request (warm-up excluded; failed requests are counted in
"errors" and their latency shown apart, since a fast 503 would pull a percentile down), each with its 95 %
confidence interval underneath (order statistics: no assumption about the distribution; "?": too few samples
to bound that side; orange "rough": open, or wider than half the value). Trust: who made late sends late
(open model: a send late while its user was free means the load generator fell behind; one late because its
user still waited on a reply means the server did), the generator's busiest process (CPU, event-loop lag),
warm-up requests excluded, interval width. Red rows: client saturated, so those numbers measure the load
generator whatever the server did; yellow rows: the server saturated (users waited on replies past their
slots, or sends due were never answered). The second table holds what the trust verdict is made of and, where
the target exports Prometheus metrics, the server's own view: its columns come from the server's histograms
from the cell's first recorded request to its end (p99 interpolated inside buckets 1.8x wide), so they can
exceed the client's.</p>
{summary_table_html(data.summary, best=best)}
<h3 id="summary-detail-head">Trust inputs and server view per cell</h3>
{summary_table_html(data.summary, DETAIL_DISPLAY, "summary-detail", best)}
<h2>Figures</h2>
{figs}
<h2>Cells as run</h2>
{cells_table_html(data)}
<h2>Run metadata</h2>
{meta_table_html(data)}
</body></html>
"""


def build_report(run_path: Path) -> ReportResult:
    """Write summary.csv, figures/*.png and report.html for the run at ``run_path``."""
    data = load_run_data(run_path)
    run = data.run
    try:
        run.figures_dir.mkdir(exist_ok=True)
        data.summary.to_csv(run.summary_path, index=False, float_format="%.10g")
        rendered: list[tuple[str, str, str, bytes | None]] = []
        paths: list[Path] = []
        specs = make_figures(data)
        made = {spec.name for spec in specs if spec.figure is not None}
        for name, *_ in (*FIGURES, SPLIT_FIGURE):
            if name not in made:  # left by an earlier report of this run: not this report's figure
                (run.figures_dir / f"{name}.png").unlink(missing_ok=True)
        for spec in specs:
            if spec.figure is None:  # nothing to draw: the page says so in one line
                rendered.append((spec.name, spec.title, spec.caption, None))
                continue
            png = png_bytes(spec.figure)
            plt.close(spec.figure)
            path = run.figures_dir / f"{spec.name}.png"
            path.write_bytes(png)
            paths.append(path)
            rendered.append((spec.name, spec.title, spec.caption, png))
        capacity = capacity_section(run)  # empty unless the run has capacity.csv (tfsbench capacity)
        paths += [capacity.figure_path] if capacity.figure_path else []
        extra = capacity.html + render_replicas(data.replicas)
        run.report_path.write_text(render_html(data, rendered, extra), encoding="utf-8")
    except OSError as exc:
        raise ResultsError(f"cannot write the report into {run.path}: {exc.strerror or exc}") from exc
    answer = data_answer(data)
    return ReportResult(run.report_path, run.summary_path, tuple(paths), run.incomplete, answer.lines if answer else ())
