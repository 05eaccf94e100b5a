"""The report's capacity section, for runs made by ``tfsbench capacity`` (they have capacity.csv).

One figure, ``figures/capacity.png``: per (batch size, encoding), the SLO percentile of latency
(from each request's intended send time) against the offered load in images/s, one point per
probe, with the SLO as a horizontal line and the chosen operating point (the highest passing
rate) starred. Around it: the answer (per-cell capacity and replicas for the target), and every
probe with its verdict.

Usage (``reports.report.build_report`` does this for every run)::

    section = capacity_section(run)     # CapacitySection("", None) when the run has no capacity.csv
    page = ... section.html ...
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from bench.errors import ResultsError
from bench.store.runs import CAPACITY_FILE, PROBES_FILE, Run
from reports.figures import ci_error_bars
from reports.page import fmt, img_tag, png_bytes

FIGURE_NAME = "capacity"
DPI = 100


@dataclass(frozen=True)
class CapacitySection:
    """The HTML fragment and the figure file it shows (None when there is nothing to show)."""

    html: str
    figure_path: Path | None


def read_table(path: Path) -> pd.DataFrame:
    """A CSV of the run (capacity.csv, probes.csv); empty when the file is; ResultsError when unreadable."""
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ResultsError(f"cannot read {path}: {exc}") from exc


def run_slo(run: Run) -> tuple[str, float, float]:
    """(text, percentile, limit in ms) of a capacity run's SLO."""
    slo = run.meta.get("slo") or {}
    config = run.meta.get("config") or {}
    percentile = float(slo.get("percentile", config.get("percentile", 99.0)))
    limit_ms = float(slo.get("limit_ms", config.get("limit_ms", math.nan)))
    text = str(slo.get("text") or f"p{percentile:g}<{limit_ms:g}ms")
    return text, percentile, limit_ms


def fig_capacity(capacity: pd.DataFrame, probes: pd.DataFrame, pct_label: str, limit_ms: float) -> Figure:
    """Latency percentile vs offered images/s per cell; SLO line; operating points starred."""
    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=DPI)
    cmap = plt.get_cmap("tab10")
    if "kind" in probes:
        probes = probes[probes["kind"].fillna("probe") != "calibration"]
    cells = list(probes.groupby(["batch", "encoding"], sort=True)) if not probes.empty else []
    for i, ((batch, encoding), group) in enumerate(cells):
        color = cmap(i % 10)
        g = group.sort_values("rate_rps")
        offered = g["rate_rps"] * batch
        latency = g["latency_pct_ms"].where(g["latency_pct_ms"] > 0)
        label = f"batch {batch} {encoding}"
        ax.plot(offered, latency, color=color, alpha=0.6, linewidth=1.2)
        if "latency_ci_low_ms" in g:  # 95 % intervals; an open one (too few samples) dotted up to the top
            top = g["latency_ci_high_ms"].fillna(latency)
            ci_error_bars(ax, offered, latency, g["latency_ci_low_ms"], g["latency_ci_high_ms"], color, top)
        passed = g["passed"].astype(str).str.lower() == "true"
        ax.scatter(offered[passed], latency[passed], color=color, marker="o", s=30, zorder=3, label=label)
        ax.scatter(offered[~passed], latency[~passed], color=color, marker="x", s=40, zorder=3)
        best = capacity[(capacity["batch"] == batch) & (capacity["encoding"] == encoding)]
        if not best.empty and float(best.iloc[0]["max_rps"]) > 0:
            row = best.iloc[0]
            x, y = float(row["max_images_per_s"]), float(row["latency_ms_at_max"])
            ax.scatter([x], [y], marker="*", s=260, color=color, edgecolors="black", linewidths=0.8, zorder=4)
            ax.annotate(f"{x:.0f} img/s", (x, y), xytext=(6, 8), textcoords="offset points", fontsize=8, color="black")
    if not math.isnan(limit_ms):
        ax.axhline(limit_ms, color="#d93025", linestyle="--", linewidth=1.2, label=f"SLO {pct_label} < {limit_ms:g} ms")
    ax.scatter([], [], color="grey", marker="x", label="probe failed (SLO, errors, unanswered sends, generator)")
    ax.scatter([], [], color="grey", marker="*", s=120, edgecolors="black", label="operating point (highest pass)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.1e}"[0] in "25" else ""))
    ax.set_xlabel("offered load (images/s = requests/s x batch size, log scale)")
    ax.set_ylabel(f"{pct_label} latency from intended send (ms, log scale)")
    ax.set_title(f"Throughput vs latency per batch size, SLO {pct_label} < {limit_ms:g} ms")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def _table(frame: pd.DataFrame, columns: tuple[tuple[str, str, str], ...], table_id: str) -> str:
    cols = [c for c in columns if c[0] in frame.columns]
    head = "".join(f'<th class="{"l" if f == "s" else ""}">{html.escape(h)}</th>' for _, h, f in cols)
    rows = []
    for _, r in frame.iterrows():
        cells = "".join(
            f'<td class="l">{html.escape(str(r[c]) if not pd.isna(r[c]) else "")}</td>'
            if f == "s"
            else f"<td>{html.escape(fmt(r[c], f))}</td>"
            for c, _, f in cols
        )
        rows.append(f"<tr>{cells}</tr>")
    return f'<div class="scroll"><table id="{table_id}"><tr>{head}</tr>{"".join(rows)}</table></div>'


def _answer(capacity: pd.DataFrame, run: Run, slo_text: str, pct_label: str) -> str:
    config = run.meta.get("config") or {}
    target = config.get("target_images_per_s")
    headroom = float(config.get("headroom") or 0.0)
    met = capacity[capacity["max_rps"] > 0]
    parts = []
    if met.empty:
        parts.append(f"No probed rate met {html.escape(slo_text)} in any cell.")
    else:
        best = met.loc[met["max_images_per_s"].idxmax()]
        at_least = "at least " if str(best.get("limited_by") or "") in ("generator", "max-rate", "max-probes") else ""
        interval = ""
        if "latency_ci_low_ms" in best and not pd.isna(best["latency_ci_low_ms"]):
            high = best.get("latency_ci_high_ms")
            interval = (
                f" (95% interval {best['latency_ci_low_ms']:.1f}–"
                f"{'?' if high is None or pd.isna(high) else f'{high:.1f}'} ms)"
            )
        sentence = (
            f"Best: batch {int(best['batch'])} {html.escape(str(best['encoding']))}, "
            f"<b>{at_least}{best['max_images_per_s']:.1f} images/s</b> per replica ({best['max_rps']:.1f} req/s) at "
            f"{pct_label} {best['latency_ms_at_max']:.1f} ms{interval}"
        )
        if target and not pd.isna(best.get("replicas")):
            sentence += (
                f"; {float(target):g} images/s with {headroom:.0%} headroom needs "
                f"<b>{int(best['replicas'])} replica{'s' if int(best['replicas']) != 1 else ''}</b>"
            )
        parts.append(sentence + ".")
    for _, r in capacity[capacity["max_rps"] <= 0].iterrows():
        parts.append(f"Batch {int(r['batch'])} {html.escape(str(r['encoding']))}: no rate met {html.escape(slo_text)}.")
    parts += _caveats(capacity)
    return "".join(f"<p>{p}</p>" for p in parts)


def _caveats(capacity: pd.DataFrame) -> list[str]:
    """Lower bounds and unmet tolerances, said next to the answer they qualify."""
    out = []
    for _, r in capacity.iterrows():
        name = f"Batch {int(r['batch'])} {html.escape(str(r['encoding']))}"
        limited = str(r.get("limited_by") or "")
        if limited == "generator":
            out.append(
                f'<span class="warn-text">{name}: the load generator could not drive more; '
                f"{float(r['max_rps']):.4g} req/s is a lower bound, not the server's capacity (add --processes or "
                "load machines).</span>"
            )
        elif limited in ("max-rate", "max-probes"):
            out.append(f"{name}: every probe passed up to {float(r['max_rps']):.4g} req/s ({limited}): a lower bound.")
        met = r.get("tolerance_met")
        if met is not None and not pd.isna(met) and str(met).lower() == "false" and not pd.isna(r.get("fail_rps")):
            out.append(
                f'<span class="warn-text">{name}: the search stopped with the answer between '
                f"{float(r['max_rps']):.4g} and {float(r['fail_rps']):.4g} req/s, wider than --tolerance.</span>"
            )
    return out


CAPACITY_DISPLAY = (
    ("batch", "batch", "d"),
    ("encoding", "encoding", "s"),
    ("max_rps", "max req/s", ".1f"),
    ("max_images_per_s", "max images/s", ".1f"),
    ("latency_ms_at_max", "latency at max (ms)", ".1f"),
    ("latency_ci_low_ms", "95% interval low", ".1f"),
    ("latency_ci_high_ms", "95% interval high", ".1f"),
    ("samples", "samples", "d"),
    ("replicas", "replicas", "d"),
    ("limited_by", "limited by", "s"),
    ("fail_rps", "next rate failed (req/s)", ".4g"),
    ("probes", "probes", "d"),
    ("ceiling_rps", "closed-run ceiling req/s", ".1f"),
)
PROBES_DISPLAY = (
    ("batch", "batch", "d"),
    ("encoding", "encoding", "s"),
    ("kind", "kind", "s"),
    ("probe", "#", "d"),
    ("rate_rps", "target req/s", ".4g"),
    ("achieved_rps", "achieved req/s", ".1f"),
    ("users", "users", "d"),
    ("due", "due", "d"),
    ("requests", "answered", "d"),
    ("latency_pct_ms", "percentile ms", ".1f"),
    ("latency_ci_low_ms", "95% low", ".1f"),
    ("latency_ci_high_ms", "95% high", ".1f"),
    ("p50_ms", "p50 ms", ".1f"),
    ("errors", "errors", "d"),
    ("late_busy", "late: server", "d"),
    ("late_idle", "late: generator", "d"),
    ("late_allowed", "late allowed", "d"),
    ("client_cpu_pct", "client CPU %", ".0f"),
    ("duration_s", "wall s", ".1f"),
    ("passed", "passed", "s"),
    ("reason", "failed on", "s"),
)


def capacity_section(run: Run) -> CapacitySection:
    """The capacity section of ``run``'s report; writes figures/capacity.png. Empty without capacity.csv."""
    capacity_path = run.path / CAPACITY_FILE
    if not capacity_path.is_file():
        return CapacitySection("", None)
    capacity = read_table(capacity_path)
    probes = read_table(run.path / PROBES_FILE) if (run.path / PROBES_FILE).is_file() else pd.DataFrame()
    slo_text, percentile, limit_ms = run_slo(run)
    pct_label = f"p{percentile:g}"
    if not capacity.empty and "limited_by" not in capacity:
        # Runs from before capacity.csv said what limited each answer: meta.json's step-up reason.
        stopped = {(c.get("batch"), c.get("encoding")): c.get("stopped_by") for c in run.meta.get("capacity") or []}
        capacity["limited_by"] = [
            stopped.get((int(b), str(e)), "") for b, e in zip(capacity["batch"], capacity["encoding"], strict=True)
        ]
    figure_path: Path | None = None
    img = ""
    if not probes.empty:
        fig = fig_capacity(capacity, probes, pct_label, limit_ms)
        png = png_bytes(fig)
        plt.close(fig)
        figure_path = run.figures_dir / f"{FIGURE_NAME}.png"
        try:
            figure_path.parent.mkdir(exist_ok=True)
            figure_path.write_bytes(png)
        except OSError as exc:
            raise ResultsError(f"cannot write {figure_path}: {exc.strerror or exc}") from exc
        img = (
            f'<figure id="fig-{FIGURE_NAME}">{img_tag(png, "throughput vs latency")}'
            "<figcaption>One point per probe: the percentile of latency counted from each request's intended "
            "send time, at the probe's offered load, with its 95 % confidence interval as a bar (dotted: no upper "
            "end, too few samples). Dots passed, crosses failed (SLO, errors, sends due left unanswered, or the "
            "generator behind); the star is the highest passing rate, the capacity reported above. Past the knee "
            "latency climbs steeply: the server is queueing.</figcaption></figure>"
        )
    config = run.meta.get("config") or {}
    arrival = html.escape(str(config.get("arrival", "?")))
    body = (
        f'<h2 id="capacity">Capacity at {html.escape(slo_text)}</h2>'
        f'<p class="sub">Per batch size, a short closed run finds the throughput ceiling (kind "calibration"), '
        f"then open-model probes ({arrival} arrivals) at fixed request rates bracket and bisect for the highest "
        "rate whose latency percentile (from intended send times, warm-up excluded, successful requests) meets "
        "the SLO with no errors and the sends due answered. Limited by: slo, errors, server-saturation (sends "
        "due left unanswered), generator (the load generator fell behind: a lower bound, not the server's "
        "capacity), max-rate, max-probes. Replicas: target / (max images/s x (1 - headroom)), rounded up. In the "
        'summary further down, probes past the knee read "server saturated": their users still waited on '
        "replies when their slots came. Cells are listed by batch size, encoding, then offered rate.</p>"
        + _answer(capacity, run, slo_text, pct_label)
        + _table(capacity, CAPACITY_DISPLAY, "capacity-table")
        + img
        + "<details><summary>Every probe</summary>"
        + (_table(probes, PROBES_DISPLAY, "probes-table") if not probes.empty else "<p>No probe ran.</p>")
        + "</details>"
    )
    return CapacitySection(body, figure_path)
