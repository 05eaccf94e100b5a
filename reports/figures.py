"""The report's matplotlib figures (Agg backend: no display needed).

Each ``fig_*`` function takes the summary (and where needed the raw records) and returns a
``Figure``; ``make_figures`` returns them all by file stem, in report order. Every axis names
its quantity and unit. One colour per encoding across all figures; cells whose client was
saturated are circled in red, because their numbers measure the load generator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from reports.data import RunData, ok_rows

DPI = 100
SAT_STYLE = {"s": 160, "facecolors": "none", "edgecolors": "red", "linewidths": 1.5, "zorder": 5}


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the report: file stem, title and a sentence on how to read it.

    ``figure`` is None when there is nothing to draw; ``caption`` then is the line the page shows instead.
    """

    name: str
    title: str
    caption: str
    figure: Figure | None


def encoding_colors(encodings: list[str]) -> dict[str, str]:
    """One colour per encoding, the same in every figure."""
    cmap = plt.get_cmap("tab10")
    return {enc: to_hex(cmap(i % 10)) for i, enc in enumerate(sorted(encodings))}


def batch_axis(ax: Axes, batches: list[int]) -> None:
    """A log2 x axis with one tick per batch size measured."""
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(sorted(set(batches))))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{int(v)}" if v >= 1 else f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("batch size (images per request)")
    ax.grid(True, which="major", alpha=0.3)


def plain_log(axis: Axis) -> None:
    """Log axis with plain numbers (2, 5, 10, 20 ms) instead of 2x10^0."""
    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    axis.set_major_formatter(fmt)
    axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.1e}"[0] in "25" else ""))


def value_axis(ax: Axes, values: pd.Series, label: str, axis: str = "y") -> None:
    """Log scale with plain numbers when the data span a decade or more; linear otherwise (a log
    axis over less than a decade shows one tick or none, and its values cannot be read)."""
    finite = pd.to_numeric(values, errors="coerce").dropna()
    finite = finite[finite > 0]
    span = float(finite.max() / finite.min()) if len(finite) else 1.0
    target = ax.yaxis if axis == "y" else ax.xaxis
    set_scale, set_label = (ax.set_yscale, ax.set_ylabel) if axis == "y" else (ax.set_xscale, ax.set_xlabel)
    if span >= 10:
        set_scale("log")
        plain_log(target)
        set_label(f"{label[:-1]}, log scale)" if label.endswith(")") else f"{label} (log scale)")
    else:
        set_scale("linear")
        target.set_major_locator(MaxNLocator(nbins=8))
        set_label(label)


def bytes_axis(ax: Axes, values: pd.Series) -> None:
    """Request body sizes on x: log over a decade or more, linear below; labelled in B/kB/MB."""
    value_axis(ax, values, "request body size (bytes per request)", axis="x")
    ax.xaxis.set_major_formatter(FuncFormatter(_bytes_formatter))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def _bytes_formatter(v: float, _pos: int | None = None) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if v >= size:
            return f"{v / size:g} {unit}"
    return f"{v:g} B"


PROTOCOL_LABELS = {"rest": "REST", "grpc": "gRPC"}
# REST solid with circles, gRPC dashed with squares: the two protocols read apart at a glance
# whatever the colours, and one figure shows both.
PROTOCOL_STYLES: dict[str, dict[str, Any]] = {"rest": {"marker": "o"}, "grpc": {"marker": "s", "linestyle": "--"}}


def protocol_of(group: pd.DataFrame) -> str:
    """A summary group's protocol (runs from before the column: rest)."""
    return str(group["protocol"].iloc[0]) if "protocol" in group and len(group) else "rest"


def _per_encoding(summary: pd.DataFrame):
    """(encoding, its rows by batch), REST encodings first, then gRPC, so the legend groups them."""
    groups = [(str(enc), group.sort_values("batch")) for enc, group in summary.groupby("encoding", sort=True)]
    order = list(PROTOCOL_LABELS)
    groups.sort(key=lambda item: (order.index(p) if (p := protocol_of(item[1])) in order else len(order), item[0]))
    yield from groups


def series_label(enc: str, group: pd.DataFrame, suffix: str = "") -> str:
    """``REST row-orjson`` / ``gRPC grpc-tensor-content``: the legend names the protocol."""
    protocol = protocol_of(group)
    return f"{PROTOCOL_LABELS.get(protocol, protocol)} {enc}{suffix}"


def series_style(group: pd.DataFrame) -> dict[str, Any]:
    return dict(PROTOCOL_STYLES.get(protocol_of(group), PROTOCOL_STYLES["rest"]))


def summary_protocols(summary: pd.DataFrame) -> list[str]:
    """The protocols of a summary's cells, REST first."""
    found = set(summary["protocol"].astype(str)) if "protocol" in summary else {"rest"}
    return [p for p in PROTOCOL_LABELS if p in found] + sorted(found - set(PROTOCOL_LABELS))


def _mark_saturated(ax, group: pd.DataFrame, x: str, y: str | pd.Series) -> None:
    sat = group[group["saturated"].astype(bool)]
    if sat.empty:
        return
    yvals = sat[y] if isinstance(y, str) else y[sat.index]
    ax.scatter(sat[x], yvals, **SAT_STYLE)


def _legend(ax, saturated_any: bool) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if saturated_any:
        handles.append(Line2D([], [], marker="o", color="red", markerfacecolor="none", linestyle="none"))
        labels.append("client saturated")
    ax.legend(handles, labels, fontsize=9, loc="best")


def ci_error_bars(
    ax: Axes, x: pd.Series, value: pd.Series, low: pd.Series, high: pd.Series, color: Any, top: pd.Series
) -> bool:
    """95 % intervals as error bars around ``value``; an interval with no upper end (too few samples
    for that percentile) is drawn dashed up to ``top`` (the largest sample). True if one was open."""
    have = value.notna() & low.notna()
    closed = have & high.notna()
    if closed.any():
        ax.errorbar(
            x[closed],
            value[closed],
            yerr=[(value - low)[closed].clip(lower=0), (high - value)[closed].clip(lower=0)],
            fmt="none",
            ecolor=color,
            elinewidth=1,
            capsize=3,
            alpha=0.8,
        )
    open_ = have & high.isna()
    for xv, lo, hi in zip(x[open_], low[open_], top[open_], strict=True):
        ax.plot([xv, xv], [lo, max(hi, lo)], color=color, linestyle=":", linewidth=1, alpha=0.8)
        ax.plot([xv], [max(hi, lo)], marker="^", color=color, markersize=4, alpha=0.8)
    return bool(open_.any())


_LATENCY_SPREAD = frozenset({"p50_ms", "p95_ms", "p99_ms", "p50_ci_low_ms", "p99_ci_high_ms"})


def fig_latency_percentiles(summary: pd.DataFrame) -> Figure:
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharey=True, dpi=DPI)
    colors = encoding_colors(list(summary["encoding"].unique()))
    any_open = False
    for ax, pct in zip(axes, ("p50", "p95", "p99"), strict=True):
        for enc, g in _per_encoding(summary):
            ax.plot(g["batch"], g[f"{pct}_ms"], color=colors[enc], label=series_label(enc, g), **series_style(g))
            if f"{pct}_ci_low_ms" in g:
                any_open |= ci_error_bars(
                    ax, g["batch"], g[f"{pct}_ms"], g[f"{pct}_ci_low_ms"], g[f"{pct}_ci_high_ms"], colors[enc],
                    g["max_ms"],
                )  # fmt: skip
            _mark_saturated(ax, g, "batch", f"{pct}_ms")
        batch_axis(ax, list(summary["batch"]))
        ax.set_title(f"{pct} latency")
    spread = pd.concat([summary[c] for c in summary.columns if c in _LATENCY_SPREAD])
    for ax in axes:
        value_axis(ax, spread, "latency (ms)")
    for ax in axes[1:]:
        ax.set_ylabel("")
    _legend(axes[0], bool(summary["saturated"].any()))
    if any_open:
        axes[-1].plot([], [], marker="^", linestyle=":", color="grey", label="no upper bound (too few samples)")
        axes[-1].legend(fontsize=9, loc="best")
    fig.suptitle("Client-side latency vs batch size (bars: 95 % confidence interval of each percentile)")
    fig.tight_layout()
    return fig


def fig_latency_vs_payload(summary: pd.DataFrame) -> Figure:
    fig, ax = plt.subplots(figsize=(9, 5), dpi=DPI)
    colors = encoding_colors(list(summary["encoding"].unique()))
    for i, (enc, g) in enumerate(_per_encoding(summary)):
        style = series_style(g)
        ax.plot(g["payload_bytes_mean"], g["p50_ms"], color=colors[enc], label=series_label(enc, g, " p50"), **style)
        ax.plot(g["payload_bytes_mean"], g["p99_ms"], marker="^", linestyle=":", color=colors[enc], alpha=0.7)
        _mark_saturated(ax, g, "payload_bytes_mean", "p50_ms")
        for _, row in g.iterrows():
            ax.annotate(
                f"b={int(row['batch'])}",
                (row["payload_bytes_mean"], row["p50_ms"]),
                fontsize=9,
                color=colors[enc],
                xytext=LABEL_OFFSETS[i % len(LABEL_OFFSETS)],
                textcoords="offset points",
            )
    ax.plot([], [], marker="^", linestyle=":", color="grey", label="p99 (dotted)")
    bytes_axis(ax, summary["payload_bytes_mean"])
    value_axis(ax, pd.concat([summary["p50_ms"], summary["p99_ms"]]), "latency (ms)")
    ax.margins(x=0.08)  # room for the batch labels of the outermost points
    title = "Latency vs payload size (points labelled with batch size)"
    if summary_protocols(summary) == ["rest", "grpc"]:
        title += ": REST solid circles, gRPC dashed squares"
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    _legend(ax, bool(summary["saturated"].any()))
    fig.tight_layout()
    return fig


def fig_throughput(summary: pd.DataFrame) -> Figure:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), dpi=DPI)
    colors = encoding_colors(list(summary["encoding"].unique()))
    for ax, col, label in (
        (axes[0], "images_per_s", "throughput (images/s)"),
        (axes[1], "rps", "throughput (requests/s)"),
    ):
        for enc, g in _per_encoding(summary):
            ax.plot(g["batch"], g[col], color=colors[enc], label=series_label(enc, g), **series_style(g))
            _mark_saturated(ax, g, "batch", col)
        batch_axis(ax, list(summary["batch"]))
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
    axes[0].set_title("Images per second")
    axes[1].set_title("Requests per second")
    _legend(axes[0], bool(summary["saturated"].any()))
    both = "REST solid, gRPC dashed; " if summary_protocols(summary) == ["rest", "grpc"] else ""
    fig.suptitle(f"Throughput vs batch size ({both}images/s from successful requests; requests/s from all)")
    fig.tight_layout()
    return fig


def fig_latency_per_image(summary: pd.DataFrame) -> Figure:
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=DPI)
    colors = encoding_colors(list(summary["encoding"].unique()))
    for enc, g in _per_encoding(summary):
        ax.plot(g["batch"], g["p50_ms"] / g["batch"], marker="o", color=colors[enc], label=f"{enc} p50")
        ax.plot(g["batch"], g["p99_ms"] / g["batch"], marker="^", linestyle=":", color=colors[enc], alpha=0.7)
    ax.plot([], [], marker="^", linestyle=":", color="grey", label="p99 (dotted)")
    batch_axis(ax, list(summary["batch"]))
    per_image = pd.concat([summary["p50_ms"] / summary["batch"], summary["p99_ms"] / summary["batch"]])
    value_axis(ax, per_image, "latency per image (ms/image)")
    ax.set_title("Latency per image vs batch size (request latency / batch size)")
    _legend(ax, False)
    fig.tight_layout()
    return fig


def per_batch_means(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (encoding, batch): body bytes and encode time averaged over that pair's cells,
    weighted by requests (a capacity run probes each pair at many rates; a sweep has one cell)."""
    weight = summary["requests"].clip(lower=1).astype(float)
    frame = summary.assign(
        _w=weight,
        _bytes=summary["payload_bytes_mean"] * weight,
        _encode=summary["encode_us_mean"].fillna(0) * weight,
    )
    grouped = frame.groupby(["encoding", "batch"], as_index=False)[["_w", "_bytes", "_encode"]].sum()
    grouped["payload_bytes_mean"] = grouped["_bytes"] / grouped["_w"]
    grouped["encode_us_mean"] = grouped["_encode"] / grouped["_w"]
    return grouped[["encoding", "batch", "payload_bytes_mean", "encode_us_mean"]]


def fig_encode_cost(summary: pd.DataFrame) -> Figure:
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=DPI)
    colors = encoding_colors(list(summary["encoding"].unique()))
    for i, (enc, g) in enumerate(_per_encoding(per_batch_means(summary))):
        y = g["encode_us_mean"].clip(lower=1e-3) / 1000.0
        ax.plot(g["payload_bytes_mean"], y, marker="o", color=colors[enc], label=enc)
        for _, row in g.iterrows():
            ax.annotate(
                f"b={int(row['batch'])}",
                (row["payload_bytes_mean"], row["encode_us_mean"] / 1000.0),
                fontsize=9,
                color=colors[enc],
                xytext=LABEL_OFFSETS[i % len(LABEL_OFFSETS)],
                textcoords="offset points",
            )
    means = per_batch_means(summary)
    bytes_axis(ax, means["payload_bytes_mean"])
    value_axis(ax, means["encode_us_mean"].clip(lower=1e-3) / 1000.0, "client encode time (ms per request)")
    ax.margins(x=0.08)
    ax.set_title("Client encode cost vs payload size (mean per request)")
    ax.grid(True, which="major", alpha=0.3)
    _legend(ax, False)
    fig.tight_layout()
    return fig


# Batch labels of different encodings at nearly the same point go to different sides of it.
LABEL_OFFSETS = ((5, -13), (5, 6), (-30, 6), (-30, -13))
BATCH_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def batch_markers(batches: list[int]) -> dict[int, str]:
    """One marker per batch size, the same in every figure that uses them."""
    return {b: BATCH_MARKERS[i % len(BATCH_MARKERS)] for i, b in enumerate(sorted(set(batches)))}


def fig_latency_over_time(summary: pd.DataFrame, records: pd.DataFrame) -> Figure:
    fig, ax = plt.subplots(figsize=(13, 4.8), dpi=DPI)
    ok = ok_rows(records)
    if ok.empty:
        ax.text(0.5, 0.5, "no successful requests recorded", ha="center", transform=ax.transAxes)
        return fig
    t0 = float(records["t_start"].min())
    colors = encoding_colors([str(e) for e in records["encoding"].unique()])
    markers = batch_markers([int(b) for b in records["batch"].unique()])
    for (enc, batch), rows in ok.groupby(["encoding", "batch"], sort=True):
        x = rows["t_start"].to_numpy() - t0
        ax.scatter(
            x, rows["latency_ms"], s=10, color=colors[str(enc)], marker=markers[int(batch)], alpha=0.55, linewidths=0
        )
    handles = [Line2D([], [], color=colors[e], marker="o", linestyle="none", label=e) for e in sorted(colors)]
    handles += [
        Line2D([], [], color="#555", marker=m, linestyle="none", markerfacecolor="none", label=f"batch {b}")
        for b, m in markers.items()
    ]
    bad = records.drop(ok.index)
    if not bad.empty:
        ax.scatter(
            bad["t_start"] - t0,
            bad["latency_ms"].fillna(0).clip(lower=ok["latency_ms"].min()),
            s=14,
            marker="x",
            color="red",
        )
        handles.append(Line2D([], [], color="red", marker="x", linestyle="none", label=f"errors ({len(bad)})"))
    value_axis(ax, ok["latency_ms"], "latency (ms)")
    ax.set_xlabel("time since the run's first request (s)")
    ax.legend(handles=handles, fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title("Latency over time: colour = encoding, marker = batch size (warm-up, drift, stalls)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def fig_error_rate(summary: pd.DataFrame) -> Figure:
    height = max(2.5, 0.28 * len(summary) + 1.2)
    fig, ax = plt.subplots(figsize=(9, height), dpi=DPI)
    rate = 100.0 * summary["errors"] / summary["requests"].where(summary["requests"] > 0)
    labels = summary["cell"].astype(str)
    colors = ["#d62728" if r > 0 else "#2ca02c" for r in rate.fillna(0)]
    ax.barh(labels, rate.fillna(0), color=colors)
    for y, (r, n, e) in enumerate(zip(rate.fillna(0), summary["requests"], summary["errors"], strict=True)):
        ax.text(r, y, f" {e}/{n}", va="center", fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("error rate (% of requests in the cell)")
    ax.set_xlim(0, max(5.0, float(rate.max() if rate.notna().any() else 0) * 1.2))
    ax.set_title("Errors per cell (errors / requests)")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def fig_latency_split(summary: pd.DataFrame) -> Figure:
    """Per cell (means, ms): wire + HTTP | server outside the model run | model runtime, stacked to the
    client latency; the client's pooled encode time as a separate thin bar."""
    s = summary[summary["server_latency_mean_ms"].notna()].copy()
    has_batch = "server_batch_size_mean" in s and bool(s["server_batch_size_mean"].notna().any())
    height = max(3.0, 0.3 * len(s) + 1.5)
    if has_batch:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, height), dpi=DPI, gridspec_kw={"width_ratios": [3, 1]})
    else:
        # tensorflow/serving exports batch sizes only from its batching session (--enable_batching):
        # without them the bars get the whole width instead of an empty panel.
        fig, ax = plt.subplots(figsize=(13, height), dpi=DPI)
        ax2 = None
    client_mean = s["latency_mean_ms"] if "latency_mean_ms" in s else s["p50_ms"]
    encode = s["encode_us_mean"].fillna(0) / 1000.0
    server = s["server_latency_mean_ms"]
    runtime = s["server_runtime_mean_ms"] if "server_runtime_mean_ms" in s else pd.Series(np.nan, index=s.index)
    runtime = runtime.fillna(0).clip(upper=server)
    wire = (client_mean - server).clip(lower=0)
    labels = s["cell"].astype(str)
    y = np.arange(len(s), dtype=float)
    left = np.zeros(len(s))
    has_runtime = bool(runtime.gt(0).any())
    parts = [(wire, "wire + HTTP + client (client latency - server latency)", "#ff7f0e")]
    if has_runtime:
        parts += [
            (server - runtime, "server outside the model run (parse, serialize, queue)", "#1f77b4"),
            (runtime, "model runtime (server)", "#2ca02c"),
        ]
    else:
        parts.append((server, "server request latency (no runtime metric exported)", "#1f77b4"))
    for values, name, color in parts:
        ax.barh(y - 0.1, values, left=left, height=0.6, label=name, color=color)
        left = left + values.to_numpy()
    # The payload pool encodes bodies before the timed request: a thin bar of its own under the
    # latency stack, not a segment of it (stacked, it would double a b64-png cell's apparent latency).
    ax.barh(
        y + 0.32,
        encode,
        height=0.22,
        color="#9467bd",
        alpha=0.55,
        hatch="///",
        edgecolor="#6a3d9a",
        linewidth=0,
        label="client encode (pooled, before the timed request: not part of the latency)",
    )
    ax.set_yticks(y, labels)
    ax.set_xlim(left=0)
    ax.invert_yaxis()
    ax.set_xlabel("time per request (ms, means)")
    ax.set_title("Where the time goes: client vs server (Prometheus)")
    # Under the whole figure, with room kept for it: below the axes it ran into the x label.
    fig.legend(*ax.get_legend_handles_labels(), fontsize=9, loc="lower center", ncol=2, frameon=False)
    ax.grid(True, axis="x", alpha=0.3)
    if ax2 is not None:
        ax2.barh(y, s["server_batch_size_mean"].fillna(0), color="#8c564b", label="server batch (mean)")
        ax2.scatter(s["batch"], y, marker="|", s=200, color="black", label="client batch")
        ax2.set_ylim(ax.get_ylim())  # same rows as the latency bars (already top-down)
        ax2.set_yticks(y, [])
        ax2.set_xlabel("images per model run")
        ax2.set_title("Server batch size")
        ax2.legend(fontsize=9)
    fig.tight_layout(rect=(0, 0.45 / height, 1, 1))
    return fig


FigureFn = Callable[[RunData], Figure]

FIGURES: tuple[tuple[str, str, str, FigureFn], ...] = (
    (
        "latency_percentiles_vs_batch",
        "Latency percentiles vs batch size",
        "p50, p95 and p99 of client-side latency per successful request, one line per encoding; the bars are "
        "each percentile's 95 % confidence interval (order statistics, no assumption about the distribution). "
        "Where they overlap, two points may not differ at all; a dotted bar has no upper end: too few samples "
        "for that percentile.",
        lambda d: fig_latency_percentiles(d.summary),
    ),
    (
        "latency_vs_payload_bytes",
        "Latency vs payload bytes",
        "Median (solid) and p99 (dotted) latency against the request body size; a JSON encoding that "
        "grows the body faster pays for it here. gRPC encodings (dashed, squares) send a serialized "
        "PredictRequest: raw bytes for grpc-tensor-content, about a quarter of row-orjson's body.",
        lambda d: fig_latency_vs_payload(d.summary),
    ),
    (
        "throughput_vs_batch",
        "Throughput vs batch size",
        "Successful images/s and requests/s at the offered load of each cell.",
        lambda d: fig_throughput(d.summary),
    ),
    (
        "latency_per_image_vs_batch",
        "Latency per image vs batch size",
        "Request latency divided by batch size: how much batching amortises per-request overhead.",
        lambda d: fig_latency_per_image(d.summary),
    ),
    (
        "encode_cost_vs_payload_bytes",
        "Client encode cost vs payload bytes",
        "Mean time the client spent building the request body (outside the timed request when the "
        "payload pool pre-encodes).",
        lambda d: fig_encode_cost(d.summary),
    ),
    (
        "latency_over_time",
        "Latency over time per cell",
        "Every successful request as a dot; look for warm-up spikes at a cell's start, drift, and stalls. "
        "Red crosses are errors.",
        lambda d: fig_latency_over_time(d.summary, d.records),
    ),
    (
        "error_rate_per_cell",
        "Error rate per cell",
        "Share of requests that failed (non-200 status or a transport error), with counts.",
        lambda d: fig_error_rate(d.summary),
    ),
)

SPLIT_FIGURE = (
    "latency_split_client_server",
    "Client vs server time",
    "Client latency split with the server's own Prometheus histograms (deltas around each cell): "
    "wire + HTTP, server time (outside the model run and the run itself where the server "
    "exports runtime latency), with the client's encode time (done before the request) as a thin hatched bar; "
    "and, with server-side batching on, the batch sizes the server actually ran. "
    "The server's figures count from the cell's first recorded request (warm-up excluded) to its end; "
    "a server quantile beyond its last bucket bound is left out rather than read as that bound.",
    lambda d: fig_latency_split(d.summary),
)


# One line per encoding across batch sizes: on a capacity run each batch size has many probes at
# rates from far below to far past the knee, so these lines would zig-zag through all of them.
# The capacity section's throughput-vs-latency figure replaces them there.
PER_BATCH_LINE_FIGURES = frozenset(
    {"latency_percentiles_vs_batch", "latency_vs_payload_bytes", "throughput_vs_batch", "latency_per_image_vs_batch"}
)


ERROR_FIGURE = "error_rate_per_cell"
NO_ERRORS = "No errors in any cell."


def has_errors(summary: pd.DataFrame) -> bool:
    return "errors" in summary and bool(summary["errors"].fillna(0).sum() > 0)


def make_figures(data: RunData) -> list[FigureSpec]:
    """All figures for one run, in report order (the client/server split only with server metrics;
    on a capacity run, none of the per-batch-size line figures). With no error anywhere the
    error-rate figure (a column of empty bars) is a figure-less spec saying so."""
    table = [f for f in FIGURES if not (data.is_capacity and f[0] in PER_BATCH_LINE_FIGURES)]
    table += [SPLIT_FIGURE] if data.has_server_metrics else []
    errors = has_errors(data.summary)
    return [
        FigureSpec(name, title, caption, fn(data))
        if name != ERROR_FIGURE or errors
        else FigureSpec(name, title, NO_ERRORS, None)
        for name, title, caption, fn in table
    ]
