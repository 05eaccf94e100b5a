"""Two ``tfsbench tune`` runs side by side (the same model on two machines, or before and after a change).

One row per configuration either run measured, keyed by its name (``off``, ``mbs32-btm2000-nbt2``):
each run's images/s within its SLO and latency there, B/A, whether it is on each run's front,
and which each run recommends. Warnings when the runs' SLOs, spaces or client cells differ, since
then the numbers answer different questions.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd

from bench.store.runs import Run
from reports.page import CSS, fmt

TUNE_COMPARE_COLUMNS = (
    "config",
    "a_images_per_s",
    "b_images_per_s",
    "ratio",
    "a_latency_ms",
    "b_latency_ms",
    "a_on_front",
    "b_on_front",
    "a_recommended",
    "b_recommended",
)


def _points(frame: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: its point where it met the SLO, else 0 images/s (and its rows' lowest latency)."""
    rows = []
    for config, group in frame.groupby("config", sort=False):
        chosen = group[group["config_point"]]
        row = chosen.iloc[0] if len(chosen) else group.iloc[0]
        rows.append(
            {
                "config": config,
                "images_per_s": float(row["max_images_per_s"]) if len(chosen) else 0.0,
                "latency_ms": float(row["latency_ms_at_max"]) if len(chosen) else np.nan,
                "on_front": bool(row["on_front"]),
                "recommended": bool(row["recommended"]),
            }
        )
    return pd.DataFrame(rows, columns=["config", "images_per_s", "latency_ms", "on_front", "recommended"])


def tune_comparison_table(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """:data:`TUNE_COMPARE_COLUMNS`, A's configurations first, then those only B measured."""
    merged = _points(a).merge(_points(b), on="config", how="outer", suffixes=("_a", "_b"), sort=False)
    table = pd.DataFrame(
        {
            "config": merged["config"],
            "a_images_per_s": merged["images_per_s_a"],
            "b_images_per_s": merged["images_per_s_b"],
            "a_latency_ms": merged["latency_ms_a"],
            "b_latency_ms": merged["latency_ms_b"],
            "a_on_front": merged["on_front_a"].fillna(False).astype(bool),
            "b_on_front": merged["on_front_b"].fillna(False).astype(bool),
            "a_recommended": merged["recommended_a"].fillna(False).astype(bool),
            "b_recommended": merged["recommended_b"].fillna(False).astype(bool),
        }
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        table["ratio"] = np.where(
            table["a_images_per_s"] > 0, table["b_images_per_s"] / table["a_images_per_s"], np.nan
        )
    return table[list(TUNE_COMPARE_COLUMNS)]


# What two tunes must share to answer the same question.
_SAME_QUESTION = (
    ("percentile", "SLO percentile"),
    ("limit_ms", "SLO limit"),
    ("batch_sizes", "client batch sizes"),
    ("encodings", "encodings"),
    ("arrival", "arrival model"),
)


def tune_notes(a: Run, b: Run) -> list[str]:
    """Why the two tunes may not be comparable: SLO, space, client cells or target differ."""
    ca: dict[str, Any] = a.meta.get("config") or {}
    cb: dict[str, Any] = b.meta.get("config") or {}
    notes = []
    cap_a, cap_b = ca.get("capacity") or {}, cb.get("capacity") or {}
    for key, what in _SAME_QUESTION:
        if cap_a.get(key) != cap_b.get(key):
            notes.append(f"the runs' {what} differ: A {cap_a.get(key)}, B {cap_b.get(key)}")
    if ca.get("space") != cb.get("space"):
        notes.append("the runs searched different spaces: configurations only one of them measured show '–'")
    if (ca.get("target") or {}).get("image") != (cb.get("target") or {}).get("image"):
        notes.append("the runs tuned different servers (embedded vs a container image)")
    if a.machine_id != b.machine_id:
        notes.append(f"different machines: A {a.machine_id}, B {b.machine_id}")
    return notes


def format_tune_table(table: pd.DataFrame) -> str:
    lines = [
        f"{'configuration':<24} {'A img/s':>9} {'B img/s':>9} {'B/A':>6} {'A ms':>7} {'B ms':>7}  front  recommended"
    ]
    for _, r in table.iterrows():
        front = ("A" if r["a_on_front"] else "-") + ("B" if r["b_on_front"] else "-")
        rec = ("A" if r["a_recommended"] else "") + ("B" if r["b_recommended"] else "")
        lines.append(
            f"{r['config']:<24} {fmt(r['a_images_per_s'], '.0f'):>9} {fmt(r['b_images_per_s'], '.0f'):>9} "
            f"{fmt(r['ratio'], '.2f'):>6} {fmt(r['a_latency_ms'], '.1f'):>7} {fmt(r['b_latency_ms'], '.1f'):>7}  "
            f"{front:^5}  {rec}"
        )
    return "\n".join(lines)


def render_tune_html(a: Run, b: Run, table: pd.DataFrame, notes: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in TUNE_COMPARE_COLUMNS)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='l'>{html.escape(str(r[c]))}</td>" if c == "config"
            else f"<td>{'✓' if r[c] else ''}</td>" if c.endswith(("on_front", "recommended"))
            else f"<td>{fmt(r[c], '.2f' if c == 'ratio' else '.1f')}</td>"
            for c in TUNE_COMPARE_COLUMNS
        )
        + "</tr>"
        for _, r in table.iterrows()
    )  # fmt: skip
    warnings = "".join(f'<div class="banner warn">{html.escape(n)}</div>' for n in notes)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>compare tune runs</title><style>{CSS}</style>"
        f"</head><body><h1>Tune runs compared</h1><p class='sub'>A = {html.escape(a.run_id)}, "
        f"B = {html.escape(b.run_id)}; ratios B/A</p>{warnings}<table><tr>{head}</tr>{body}</table></body></html>"
    )
