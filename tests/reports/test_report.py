"""tfsbench report: summary.csv from raw rows, every figure, one self-contained HTML page.

The runs here are written with the real bench.store.records.RecordWriter (rows of the records
contract) into a real run directory, so the report reads exactly what a sweep leaves behind.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
import pytest

from bench.store import runs
from reports.figures import FIGURES
from reports.report import build_report
from tests.helpers.fake_runs import BATCHES, ENCODINGS, write_run


def test_summary_percentiles_are_numpy_percentiles_of_the_rows(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, saturated_cell="b16-b64-png")
    result = build_report(run_dir)
    summary = pd.read_csv(result.summary_path)
    rows = pd.read_csv(run_dir / runs.REQUESTS_FILE)
    assert len(summary) == len(ENCODINGS) * len(BATCHES)
    for _, s in summary.iterrows():
        cell = rows[rows["cell"] == s["cell"]]
        lat = cell.loc[cell["status"] == 200, "latency_ms"].to_numpy()  # successful requests only
        expected = np.percentile(lat, [50, 90, 95, 99])
        np.testing.assert_allclose(s[["p50_ms", "p90_ms", "p95_ms", "p99_ms"]].to_numpy(float), expected, rtol=1e-5)
        assert s["requests"] == len(cell)
        assert s["errors"] == 2  # rows 24 and 49 of 60
        assert s["samples"] == len(lat) == 58
        assert s["error_p50_ms"] == pytest.approx(np.median(cell.loc[cell["status"] != 200, "latency_ms"]), rel=1e-5)
        # 58 samples: p50's interval is bounded, p95's and p99's have no upper end, so they are rough.
        assert s["p50_ci_low_ms"] <= s["p50_ms"] <= s["p50_ci_high_ms"]
        assert np.isnan(s["p99_ci_high_ms"])
        assert "p99" in s["rough"]
    # The contract's columns come first and in order; trust columns follow.
    head = list(summary.columns[:14])
    assert head == [
        "cell",
        "batch",
        "encoding",
        "requests",
        "errors",
        "rps",
        "images_per_s",
        "p50_ms",
        "p90_ms",
        "p95_ms",
        "p99_ms",
        "max_ms",
        "payload_bytes_mean",
        "encode_us_mean",
    ]
    sat = summary.set_index("cell")["saturated"]
    assert sat["b16-b64-png"]
    assert not sat.drop("b16-b64-png").any()
    assert (summary["warmup_excluded"] == 5).all()


def _embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_html_is_self_contained_with_every_figure(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, saturated_cell="b16-b64-png")
    result = build_report(run_dir)
    page = result.html_path.read_text()
    pngs = _embedded_pngs(page)
    assert len(pngs) == len(FIGURES) == len(result.figure_paths)
    assert all(p.startswith(b"\x89PNG") for p in pngs)
    for name, *_ in FIGURES:
        assert f'id="fig-{name}"' in page
        assert (run_dir / runs.FIGURES_DIR / f"{name}.png").read_bytes() in pngs
    # Opens offline: nothing is fetched from anywhere.
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert 'id="embedded"' in page  # results from the embedded server are labelled
    assert 'id="saturated"' in page
    assert "b16-b64-png" in page
    assert 'id="incomplete"' not in page
    assert "client saturated" in page
    assert "No errors in any cell." not in page  # every cell here has 2 failed requests


def test_no_error_figure_when_no_cell_has_errors(tmp_path: Path) -> None:
    from reports.figures import ERROR_FIGURE, NO_ERRORS

    run_dir = write_run(tmp_path, errors=False)
    stale = run_dir / runs.FIGURES_DIR / f"{ERROR_FIGURE}.png"
    stale.parent.mkdir(exist_ok=True)
    stale.write_bytes(b"left by an earlier report")
    result = build_report(run_dir)
    page = result.html_path.read_text()
    assert (pd.read_csv(result.summary_path)["errors"] == 0).all()
    # A column of empty bars says less than one line: the line is there, the figure and its PNG are not.
    assert re.search(rf'<p class="none" id="fig-{ERROR_FIGURE}">{NO_ERRORS}</p>', page)
    assert page.count(NO_ERRORS) == 1
    assert not stale.exists()
    assert ERROR_FIGURE not in {p.stem for p in result.figure_paths}
    assert len(_embedded_pngs(page)) == len(FIGURES) - 1 == len(result.figure_paths)
    assert "Error rate per cell" not in page


def test_report_on_an_incomplete_run_with_server_metrics(tmp_path: Path) -> None:
    run_dir = write_run(
        tmp_path,
        incomplete="interrupted (Ctrl-C) during cell b4-b64-png",
        server_metrics=True,
        server_kind="tensorflow-serving",
    )
    page = build_report(run_dir).html_path.read_text()
    assert 'id="incomplete"' in page
    assert "interrupted (Ctrl-C)" in page
    assert 'id="embedded"' not in page
    assert 'id="fig-latency_split_client_server"' in page
    assert len(_embedded_pngs(page)) == len(FIGURES) + 1
    summary = pd.read_csv(run_dir / runs.SUMMARY_FILE)
    assert summary["server_latency_mean_ms"].notna().all()


def _bars(ax) -> dict[str, list[float]]:
    """Bar widths per legend label of a horizontal stacked bar chart."""
    return {c.get_label(): [r.get_width() for r in c.patches] for c in ax.containers}


@pytest.mark.parametrize("batch_metric", [True, False])
def test_split_figure_separates_model_runtime_from_the_rest(tmp_path: Path, batch_metric: bool) -> None:
    from reports.data import load_run_data
    from reports.figures import fig_latency_split

    data = load_run_data(write_run(tmp_path, server_metrics=True, server_batch_metric=batch_metric))
    fig = fig_latency_split(data.summary)
    bars = _bars(fig.axes[0])
    s = data.summary
    runtime = s["server_runtime_mean_ms"].to_numpy()
    np.testing.assert_allclose(bars["model runtime (server)"], runtime)
    outside = bars["server outside the model run (parse, serialize, queue)"]
    np.testing.assert_allclose(outside, s["server_latency_mean_ms"].to_numpy() - runtime)
    wire = bars["wire + HTTP + client (client latency - server latency)"]
    np.testing.assert_allclose(wire, (s["latency_mean_ms"] - s["server_latency_mean_ms"]).clip(lower=0))
    # Batch sizes only where the server exports them (tensorflow/serving: with batching on);
    # otherwise no empty side panel, the bars take the whole width.
    assert len(fig.axes) == (2 if batch_metric else 1)
    if batch_metric:
        assert _bars(fig.axes[1])["server batch (mean)"] == s["batch"].astype(float).tolist()
    else:
        assert fig.axes[0].get_position().width > 0.7


def test_report_cli_one_line_for_a_dir_that_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "report", str(tmp_path / "empty")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1
    assert "is not a tfsbench run" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_report_cli_writes_the_page(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "report", str(tmp_path / runs.LATEST)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "report.html" in proc.stdout
    assert (run_dir / runs.REPORT_FILE).stat().st_size > 10_000


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def screenshot(
    page: Path, png: Path, profile: Path, width: int = 1400, height: int = 4000
) -> subprocess.CompletedProcess:
    browser = chromium()
    assert browser
    return subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--hide-scrollbars",
            f"--window-size={width},{height}",
            f"--screenshot={png}",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )


@pytest.mark.skipif(chromium() is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, saturated_cell="b16-b64-png", server_metrics=True)
    html_path = build_report(run_dir).html_path
    png = tmp_path / "shot.png"
    proc = screenshot(html_path, png, tmp_path / "profile")
    assert proc.returncode == 0, proc.stderr[-2000:]
    from PIL import Image

    with Image.open(png) as img:
        assert img.size == (1400, 4000)
        pixels = np.asarray(img.convert("RGB"))
    # A page that rendered is not blank: many distinct colours from the figures and tables.
    assert len(np.unique(pixels.reshape(-1, 3)[::97], axis=0)) > 50
    # Every image decodes in the browser: the DOM dump lists each figure with its natural width.
    dom = subprocess.run(
        [
            cast(str, chromium()),  # the test is skipped without one
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'p2'}",
            "--dump-dom",
            html_path.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert dom.returncode == 0
    assert dom.stdout.count("<img") == len(FIGURES) + 1


# Writes, per table wrapper, "<table id>:<content width>/<visible width>" into the DOM for --dump-dom.
FIT_PROBE = (
    "<script>document.body.dataset.fit=[...document.querySelectorAll('div.scroll')]"
    ".map(d=>d.firstElementChild.id+':'+d.scrollWidth+'/'+d.clientWidth).join(' ')</script></body>"
)


@pytest.mark.skipif(chromium() is None, reason="chromium is not installed (apt-get install chromium)")
def test_summary_tables_fit_a_1400px_page_without_scrolling(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, saturated_cell="b16-b64-png", server_metrics=True)
    page = build_report(run_dir).html_path.read_text()
    for table_id in ("summary", "summary-detail"):
        assert f'<table id="{table_id}">' in page
    # The long "client saturated ... client fell behind" verdict is in the table and wraps inside its cell.
    assert re.search(r'<td class="l trust trust-bad">client saturated', page)
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", FIT_PROBE))
    dom = subprocess.run(
        [
            cast(str, chromium()),  # the test is skipped without one
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1400,3000",
            "--dump-dom",
            probe.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    fit = re.search(r'data-fit="([^"]*)"', dom.stdout)
    assert fit, "the page's script did not run"
    widths = {k: tuple(map(int, v.split("/"))) for k, v in (x.rsplit(":", 1) for x in fit[1].split())}
    for table_id in ("summary", "summary-detail"):
        content, visible = widths[table_id]
        assert 0 < content <= visible, f"{table_id} is {content} px wide in a {visible} px box: it scrolls"
