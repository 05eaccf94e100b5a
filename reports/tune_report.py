"""The page of a ``tfsbench tune`` run: what it recommends, the throughput-vs-latency front, every configuration.

Read from the run's tune.csv as ``tfsbench tune`` wrote it: one row per configuration x client
batch x encoding; ``config_point`` marks the row that stands for its configuration (its best
cell within the SLO), ``on_front`` the configurations no other beats on both images/s and
latency, ``recommended`` the front's highest throughput. Nothing here recomputes those, so the
page says exactly what the command decided.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from bench.errors import ResultsError
from bench.store import runs
from reports.page import CSS, fmt, img_tag, png_bytes

TUNE_FILE = "tune.csv"
FIGURE_NAME = "tune_front"
_BOOL_COLUMNS = ("batching", "met_slo", "config_point", "on_front", "recommended")


def read_tune(run_dir: Path) -> pd.DataFrame:
    """tune.csv of a tune run (booleans as booleans); ResultsError when it has none."""
    path = Path(run_dir) / TUNE_FILE
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise ResultsError(f"{run_dir} is not a tune run (no {TUNE_FILE}; made by tfsbench tune)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as exc:
        raise ResultsError(f"cannot read {path}: {exc}") from exc
    for column in _BOOL_COLUMNS:
        if column in frame:
            frame[column] = frame[column].map(lambda v: str(v).strip().lower() == "true")
    return frame


def is_tune_run(run_dir: Path) -> bool:
    return (runs.resolve_run_path(Path(run_dir)) / TUNE_FILE).is_file()


def configuration_points(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration that met the SLO somewhere: the row that stands for it."""
    return frame[frame["config_point"]].reset_index(drop=True)


def front_figure(frame: pd.DataFrame, percentile: str, limit_ms: float | None) -> Figure | None:
    """Every configuration a point (images/s against its latency there), the front drawn, choices marked."""
    points = configuration_points(frame)
    if points.empty:
        return None
    fig, ax = plt.subplots(figsize=(9.0, 5.2), dpi=110)
    others = points[~points["on_front"]]
    ax.scatter(others["latency_ms_at_max"], others["max_images_per_s"], color="#9aa0a6", s=42, label="measured")
    front = points[points["on_front"]].sort_values("latency_ms_at_max")
    ax.plot(front["latency_ms_at_max"], front["max_images_per_s"], "-o", color="#1a73e8", ms=7, label="front")
    off = points[~points["batching"]]
    if len(off):
        ax.scatter(off["latency_ms_at_max"], off["max_images_per_s"], marker="s", s=90, facecolor="none",
                   edgecolor="#202124", linewidth=1.6, label="batching off", zorder=4)  # fmt: skip
    best = points[points["recommended"]]
    if len(best):
        ax.scatter(best["latency_ms_at_max"], best["max_images_per_s"], marker="*", s=320, color="#e37400",
                   edgecolor="#202124", label="recommended", zorder=5)  # fmt: skip
    for _, row in points.iterrows():
        ax.annotate(str(row["config"]), (row["latency_ms_at_max"], row["max_images_per_s"]), fontsize=9,
                    xytext=(6, 4), textcoords="offset points", color="#3c4043")  # fmt: skip
    if limit_ms:
        ax.axvline(limit_ms, color="#d93025", linestyle="--", linewidth=1, label=f"SLO {percentile} < {limit_ms:g} ms")
    ax.set_xlabel(f"{percentile} latency at the highest rate within the SLO (ms)", fontsize=11)
    ax.set_ylabel("images/s within the SLO", fontsize=11)
    ax.tick_params(labelsize=10)
    ax.set_ylim(bottom=0)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=10, loc="lower right")
    ax.set_title("Batching configurations: throughput against latency", fontsize=12)
    fig.tight_layout()
    return fig


def answer_lines(frame: pd.DataFrame, percentile: str) -> list[str]:
    """The recommendation, against batching off, the front, and a warning where the generator was the limit."""
    points = configuration_points(frame)
    best = points[points["recommended"]]
    lines = []
    if best.empty:
        lines.append("No configuration met the SLO: loosen it, or read the capacity runs under configs/.")
    else:
        b = best.iloc[0]
        lines.append(
            f"Recommended: {b['config']}: {b['max_images_per_s']:.0f} images/s within the SLO "
            f"({percentile} {b['latency_ms_at_max']:.1f} ms at that load; "
            f"client batch {b['client_batch']}, {b['encoding']})."
        )
        off = points[~points["batching"]]
        if len(off) and bool(b["batching"]):
            o = off.iloc[0]
            ratio = b["max_images_per_s"] / o["max_images_per_s"] if o["max_images_per_s"] else float("inf")
            served = f"{o['max_images_per_s']:.0f} images/s"
            lines.append(f"Batching off serves {served}: the recommendation is {ratio:.2f}x.")
        elif not len(off) and (~frame["batching"]).any():
            lines.append("Batching off met the SLO at no rate.")
        front = points[points["on_front"]].sort_values("max_images_per_s", ascending=False)
        names = ", ".join(front["config"])
        lines.append(f"The front has {len(front)} of {frame['config'].nunique()} configurations: {names}.")
    generator = sorted(set(frame.loc[frame["limited_by"] == "generator", "config"]))
    if generator:
        lines.append(
            f"The load generator, not the server, limited {len(generator)} configuration(s) ({', '.join(generator)}): "
            "their numbers are lower bounds; rerun with --processes or on a quieter machine."
        )
    return lines


_TABLE = (
    ("config", "configuration", "s"),
    ("max_batch_size", "max batch", "d"),
    ("batch_timeout_micros", "timeout µs", "d"),
    ("num_batch_threads", "threads", "d"),
    ("client_batch", "client batch", "d"),
    ("encoding", "encoding", "s"),
    ("max_images_per_s", "images/s", ".0f"),
    ("max_rps", "req/s", ".1f"),
    ("latency_ms_at_max", "latency ms", ".1f"),
    ("limited_by", "limited by", "s"),
    ("server_cpu_pct", "server CPU %", ".0f"),
    ("server_peak_rss_mb", "peak RSS MB", ".0f"),
)


_LEFT = ' class="l"'
_PARAMETER_COLUMNS = ("max_batch_size", "batch_timeout_micros", "num_batch_threads")


def _cell_text(row: pd.Series, column: str, spec: str) -> str:
    if column in _PARAMETER_COLUMNS and not row["batching"]:
        return "off" if column == "max_batch_size" else ""
    text = fmt(row.get(column), spec)
    if column == "config":
        text += " ★" if row["recommended"] else (" (front)" if row["on_front"] else "")
    return text


def _table(frame: pd.DataFrame) -> str:
    """Every row of tune.csv, the front first; the recommendation highlighted and starred."""
    head = "".join(f"<th{_LEFT if spec == 's' else ''}>{html.escape(title)}</th>" for _, title, spec in _TABLE)
    body = []
    order = frame.sort_values(["on_front", "max_images_per_s"], ascending=[False, False], kind="stable")
    for _, row in order.iterrows():
        cells = "".join(
            f"<td{_LEFT if spec == 's' else ''}>{html.escape(_cell_text(row, column, spec))}</td>"
            for column, _, spec in _TABLE
        )
        style = ' class="srv"' if row["recommended"] else ""
        body.append(f"<tr{style}>{cells}</tr>")
    return f'<div class="scroll"><table><tr>{head}</tr>{"".join(body)}</table></div>'


def build_tune_report(run_path: Path) -> Path:
    """Write report.html and figures/tune_front.png for the tune run at ``run_path``; returns the page."""
    run = runs.load_run(run_path)
    frame = read_tune(run.path)
    config: dict[str, Any] = run.meta.get("config") or {}
    capacity = config.get("capacity") or {}
    percentile = f"p{capacity.get('percentile', 99):g}"
    limit_ms = capacity.get("limit_ms")
    fig = front_figure(frame, percentile, limit_ms)
    parts = [f"<h1>tfsbench tune {html.escape(run.run_id)}</h1>"]
    target = config.get("target") or {}
    where = "the embedded server" if not target.get("image") else f"{target.get('image')} in Docker"
    searched = frame["config"].nunique() if len(frame) else 0
    parts.append(
        f'<p class="sub">SLO {percentile} &lt; {fmt(limit_ms, "g")} ms on {html.escape(where)}, model '
        f"{html.escape(str(capacity.get('model_name', '')))}; {searched} configurations measured of a grid of "
        f"{fmt(config.get('grid_size'), 'd')}; search {fmt(run.meta.get('search_s'), '.0f')} s</p>"
    )
    if run.incomplete:
        parts.append(f'<div class="banner incomplete">Incomplete: {html.escape(str(run.incomplete_reason))}</div>')
    parts.append(
        "<h2>What this tune says</h2><ul>"
        + "".join(f"<li>{html.escape(t)}</li>" for t in answer_lines(frame, percentile))
        + "</ul>"
    )
    try:
        run.figures_dir.mkdir(exist_ok=True)
        if fig is not None:
            png = png_bytes(fig)
            plt.close(fig)
            (run.figures_dir / f"{FIGURE_NAME}.png").write_bytes(png)
            parts.append(
                f"<figure>{img_tag(png, 'throughput against latency per configuration')}<figcaption>Each configuration "
                "at its best client cell within the SLO; the front joins those no other beats on both. "
                "Batching off is the square, the recommendation the star.</figcaption></figure>"
            )
        parts.append("<h2>Every configuration</h2>" + _table(frame))
        parts.append(
            "<p class='sub'>Each configuration's capacity run is under configs/&lt;configuration&gt;/; the "
            f"recommended file is {html.escape(str(run.path / 'batching_parameters.txt'))}.</p>"
        )
        page = f"<!doctype html><html><head><meta charset='utf-8'><title>tune {html.escape(run.run_id)}</title>"
        page += f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>"
        run.report_path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ResultsError(f"cannot write the report into {run.path}: {exc.strerror or exc}") from exc
    return run.report_path
