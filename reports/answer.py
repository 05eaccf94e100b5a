"""What a sweep says, in a few lines computed from its summary (never written by hand).

The same lines open report.html ("What this run says") and end ``tfsbench sweep`` and
``tfsbench demo``::

    answer = run_answer(summary, slo=(99.0, 50.0))
    print("\\n".join(answer.lines))     # best images/s per batch size, the winning encoding and by how much
    answer.best_cells                   # the cells the report's tables star

Per batch size: the cell with the most images/s among those that meet the SLO (``--slo``; without
one, every cell with no error, its p99 stated), the runner-up encoding and the ratio between
them, each with the 95 % interval of its percentile; then the request body size of each encoding
relative to the smallest, and what limits the conclusion (a saturated client or server, errors,
rough intervals, an incomplete run, the embedded server).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

# SLO percentiles the summary has columns for (p{q}_ms with its p{q}_ci_*_ms).
_PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class Answer:
    lines: tuple[str, ...]
    best_cells: frozenset[str]


def _ms(value: float) -> str:
    return f"{_num(value)} ms"


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _bytes(value: float) -> str:
    for unit, size in (("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.0f} B"


def _num(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _interval(row: pd.Series, q: int) -> str:
    """``95% CI 12.1–14.0`` (ms); ``?`` for an end too few samples could bound."""
    low, high = row.get(f"p{q}_ci_low_ms"), row.get(f"p{q}_ci_high_ms")
    lo = "?" if low is None or pd.isna(low) else _num(low)
    hi = "?" if high is None or pd.isna(high) else _num(high)
    return f"95% CI {lo}–{hi}"


def _overlap(a: pd.Series, b: pd.Series, q: int) -> bool:
    """Whether two cells' p{q} intervals overlap (an open end counts as reaching that way)."""
    a_lo, a_hi = a.get(f"p{q}_ci_low_ms"), a.get(f"p{q}_ci_high_ms")
    b_lo, b_hi = b.get(f"p{q}_ci_low_ms"), b.get(f"p{q}_ci_high_ms")
    a_lo = -math.inf if a_lo is None or pd.isna(a_lo) else a_lo
    b_lo = -math.inf if b_lo is None or pd.isna(b_lo) else b_lo
    a_hi = math.inf if a_hi is None or pd.isna(a_hi) else a_hi
    b_hi = math.inf if b_hi is None or pd.isna(b_hi) else b_hi
    return bool(a_lo <= b_hi and b_lo <= a_hi)


def _flag(row: pd.Series) -> str:
    if bool(row.get("saturated")):
        return " [client saturated]"
    if bool(row.get("server_saturated")):
        return " [server saturated]"
    return ""


def slo_percentile(slo: tuple[float, float] | None) -> int:
    """The summary percentile an SLO is checked against (p99 without an SLO)."""
    if slo is None:
        return 99
    return min(_PERCENTILES, key=lambda q: (abs(q - slo[0]), -q))


def run_answer(
    summary: pd.DataFrame,
    slo: tuple[float, float] | None = None,
    incomplete_reason: str | None = None,
    server_kind: str | None = None,
) -> Answer:
    """The answer lines and the starred cells for one sweep's summary (one row per cell)."""
    q = slo_percentile(slo)
    col = f"p{q}_ms"
    measured = summary[summary["images_per_s"].notna() & summary[col].notna()]
    if measured.empty:
        return Answer(("No successful request: nothing to compare.",), frozenset())
    errors = measured["errors"].fillna(0)
    bound = f"p{q}<{slo[1]:g}ms" if slo else None
    head = (
        f"Most images/s per batch size within {bound} (--slo), no errors:"
        if bound
        else f"Most images/s per batch size (no --slo given: every cell with no error; its p{q} stated):"
    )
    lines = [head]
    best: list[pd.Series] = []
    for batch, group in measured.groupby("batch", sort=True):
        clean = group[errors[group.index] == 0]
        within = clean[clean[col] <= slo[1]] if slo else clean
        if within.empty:
            lowest = group.loc[group[col].idxmin()]
            why = f"meets {bound}" if bound else "ran without errors"
            lines.append(f"  b{batch}: no encoding {why} (lowest p{q}: {_ms(lowest[col])}, {lowest['encoding']})")
            continue
        ranked = within.sort_values("images_per_s", ascending=False)
        top = ranked.iloc[0]
        best.append(top)
        text = (
            f"  b{batch}: {top['encoding']} {_rate(top['images_per_s'])} images/s, p{q} {_ms(top[col])} "
            f"({_interval(top, q)}){_flag(top)}"
        )
        if len(ranked) > 1:
            second = ranked.iloc[1]
            ratio = top["images_per_s"] / second["images_per_s"] if second["images_per_s"] > 0 else math.inf
            same = f"; their p{q} intervals overlap" if _overlap(top, second, q) else ""
            text += (
                f"; {ratio:.2f}x the next, {second['encoding']} {_rate(second['images_per_s'])} images/s, "
                f"p{q} {_ms(second[col])} ({_interval(second, q)}){same}"
            )
        lines.append(text)
    if best:
        overall = max(best, key=lambda r: float(r["images_per_s"]))
        lines.append(
            f"Most images/s overall: {overall['cell']}, {_rate(overall['images_per_s'])} images/s "
            f"at p{q} {_ms(overall[col])}."
        )
    lines += _payload_lines(measured)
    lines += _trust_lines(summary, best, incomplete_reason, server_kind)
    return Answer(tuple(lines), frozenset(str(r["cell"]) for r in best))


def _payload_lines(measured: pd.DataFrame) -> list[str]:
    largest = int(measured["batch"].max())
    at = measured[measured["batch"] == largest].groupby("encoding")["payload_bytes_mean"].mean().sort_values()
    if len(at) < 2 or not at.iloc[0] > 0:
        return []
    smallest = float(at.iloc[0])
    parts = ", ".join(f"{enc} {_bytes(v)} ({v / smallest:.2g}x)" for enc, v in at.items())
    return [f"Request body at b{largest}: {parts}."]


def _trust_lines(
    summary: pd.DataFrame, best: list[pd.Series], incomplete_reason: str | None, server_kind: str | None
) -> list[str]:
    out: list[str] = []
    sat = summary[summary["saturated"].fillna(False).astype(bool)] if "saturated" in summary else summary.iloc[:0]
    if not sat.empty:
        out.append(
            f"Trust: {len(sat)} of {len(summary)} cells had a saturated client ({', '.join(sat['cell'].astype(str))}): "
            "their images/s are a lower bound and their latency partly the load generator's; add --processes "
            "or fewer --users."
        )
    if "server_saturated" in summary:
        srv = summary[summary["server_saturated"].fillna(False).astype(bool)]
        if not srv.empty:
            out.append(f"Trust: the server saturated in {len(srv)} cells: their latency includes queueing.")
    failing = summary[summary["errors"].fillna(0) > 0]
    if not failing.empty:
        out.append(f"Errors in {len(failing)} cells ({', '.join(failing['cell'].astype(str))}): left out above.")
    rough = [str(r["cell"]) for r in best if str(r.get("rough") or "")]
    if rough:
        out.append(f"Rough intervals (too few requests) in {', '.join(rough)}: run longer or more --requests.")
    if incomplete_reason:
        out.append(f"Incomplete run: {incomplete_reason}.")
    if server_kind == "embedded":
        out.append("Measured on the embedded server, not tensorflow/serving: compare encodings and batch sizes.")
    return out
