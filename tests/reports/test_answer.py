""" "What this run says": computed from the summary of a run written like a sweep writes it, shown
first in report.html with the best cells starred; the figures and metadata a newcomer reads."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from bench.store import runs
from reports.answer import run_answer
from reports.data import load_run_data
from reports.figures import fig_latency_over_time, fig_latency_percentiles
from reports.metadata import metadata_rows
from reports.report import build_report
from tests.helpers.fake_runs import BATCHES, ENCODINGS, write_run


@pytest.fixture
def clean_run(tmp_path: Path) -> Path:
    return write_run(tmp_path / "runs", errors=False, requests_per_cell=200)


def test_best_per_batch_is_the_most_images_per_s_and_the_margin_is_their_ratio(clean_run: Path) -> None:
    summary = load_run_data(clean_run).summary
    answer = run_answer(summary)
    assert answer.lines[0].startswith("Most images/s per batch size (no --slo given")
    for batch in BATCHES:
        group = summary[summary["batch"] == batch].sort_values("images_per_s", ascending=False)
        top, second = group.iloc[0], group.iloc[1]
        (line,) = [line for line in answer.lines if line.strip().startswith(f"b{batch}:")]
        assert line.strip().startswith(f"b{batch}: {top['encoding']} ")
        ratio = top["images_per_s"] / second["images_per_s"]
        assert f"{ratio:.2f}x the next, {second['encoding']}" in line
        assert f"p99 {top['p99_ms']:.3g} ms (95% CI {top['p99_ci_low_ms']:.3g}–" in line
    assert answer.best_cells == {
        str(summary.loc[summary[summary["batch"] == b]["images_per_s"].idxmax(), "cell"]) for b in BATCHES
    }
    sizes = summary[summary["batch"] == max(BATCHES)].set_index("encoding")["payload_bytes_mean"]
    body = next(line for line in answer.lines if line.startswith("Request body at"))
    assert f"({sizes.max() / sizes.min():.2g}x)" in body


def test_an_slo_leaves_out_the_cells_above_it(clean_run: Path) -> None:
    summary = load_run_data(clean_run).summary
    # Between the fastest and the slowest p99 at the largest batch size: only one encoding meets it.
    big = summary[summary["batch"] == max(BATCHES)].sort_values("p99_ms")
    limit = float(big["p99_ms"].mean())
    smallest_p99 = float(summary["p99_ms"].min())
    answer = run_answer(summary, slo=(99.0, limit))
    assert answer.lines[0] == f"Most images/s per batch size within p99<{limit:g}ms (--slo), no errors:"
    (line,) = [line for line in answer.lines if line.strip().startswith(f"b{max(BATCHES)}:")]
    assert line.strip().startswith(f"b{max(BATCHES)}: {big.iloc[0]['encoding']} ")
    assert "the next" not in line  # the other encoding is above the SLO
    none_meet = run_answer(summary, slo=(99.0, smallest_p99 / 2))
    assert all("no encoding meets" in line for line in none_meet.lines if line.strip().startswith("b"))
    assert not none_meet.best_cells


def test_cells_with_errors_and_saturated_clients_are_named(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "runs", errors=True, saturated_cell="b4-row-orjson")
    answer = run_answer(load_run_data(run_dir).summary, server_kind="embedded")
    text = "\n".join(answer.lines)
    assert "b4-row-orjson" in next(line for line in answer.lines if line.startswith("Trust:"))
    assert f"Errors in {len(BATCHES) * len(ENCODINGS)} cells" in text
    assert "no encoding ran without errors" in text
    assert "embedded server" in answer.lines[-1]


def test_report_opens_with_the_answer_and_stars_the_best_cells(clean_run: Path) -> None:
    result = build_report(clean_run)
    page = result.html_path.read_text()
    assert page.index('id="answer"') < page.index('id="summary"')
    assert result.answer[0] in page
    for cell in run_answer(load_run_data(clean_run).summary).best_cells:
        assert f"★ {cell}" in page
        assert re.search(rf'<tr class="[^"]*best[^"]*"><td class="l">★ {cell}</td>', page)


def test_time_figure_one_colour_per_encoding_one_marker_per_batch(clean_run: Path) -> None:
    data = load_run_data(clean_run)
    fig = fig_latency_over_time(data.summary, data.records)
    try:
        ax = fig.axes[0]
        box = ax.get_legend()
        assert box is not None
        legend = [t.get_text() for t in box.get_texts()]
        assert legend == [*sorted(ENCODINGS), *(f"batch {b}" for b in BATCHES)]
        colours: dict[str, set[tuple[float, ...]]] = {}
        markers: dict[int, set[bytes]] = {}
        for collection, (enc, batch) in zip(
            ax.collections, sorted((e, b) for e in ENCODINGS for b in BATCHES), strict=True
        ):
            face = np.asarray(collection.get_facecolor(), dtype=float)
            colours.setdefault(enc, set()).add(tuple(face[0][:3]))
            markers.setdefault(batch, set()).add(np.asarray(collection.get_paths()[0].vertices).tobytes())
        assert all(len(c) == 1 for c in colours.values())
        assert len({next(iter(c)) for c in colours.values()}) == len(ENCODINGS)
        assert len({next(iter(m)) for m in markers.values()}) == len(BATCHES)
        assert not [t for t in ax.texts]  # no rotated cell names
    finally:
        plt.close(fig)


def test_latency_under_a_decade_gets_a_linear_axis(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "runs", errors=False, requests_per_cell=200)
    summary = load_run_data(run_dir).summary
    one = summary[summary["cell"] == summary["cell"].iloc[0]]
    fig = fig_latency_percentiles(one)
    try:
        assert fig.axes[0].get_yscale() == "linear"
        assert len([t for t in fig.axes[0].get_yticks() if one["p50_ms"].min() / 2 < t < one["max_ms"].max()]) >= 3
    finally:
        plt.close(fig)
    fig = fig_latency_percentiles(summary)  # b1 row-orjson to b16 b64-png: more than a decade
    try:
        assert fig.axes[0].get_yscale() == "log"
    finally:
        plt.close(fig)


def test_metadata_is_a_tidy_table(clean_run: Path) -> None:
    runs.update_meta(
        clean_run,
        target={
            "host": "http://127.0.0.1:1",
            "server_kind": "embedded",
            "model_name": "classifier",
            "model_version": "1",
            "signatures": ["__saved_model_init_op", "serving_bytes", "serving_default"],
        },
    )
    rows = dict(metadata_rows(runs.load_run(clean_run)))
    assert rows["signatures"] == "serving_bytes, serving_default"
    assert "GiB memory" in rows["machine"]
    assert rows["TensorFlow that served"].endswith("(the embedded server's)")
    for value in rows.values():
        assert not re.search(r"\b(None|False|True)\b|\[|\]", value), value
