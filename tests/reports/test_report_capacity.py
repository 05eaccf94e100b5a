"""tfsbench report on a capacity run: natural cell order, no per-batch line figures, trust by cause.

The run directory is written like ``tfsbench capacity`` leaves it (meta.json command "capacity",
one cell per probe named ``b16-row-orjson@42.5rps``), with real RecordWriter rows whose send
times, send lags and client CPU shares make each probe's story: on schedule, the server falling
behind the offered rate, the client out of CPU, or late sends the data cannot pin on either side.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd

from bench.store import runs
from reports.figures import ERROR_FIGURE, FIGURES, NO_ERRORS, PER_BATCH_LINE_FIGURES
from reports.report import build_report
from tests.helpers.fake_runs import NATURAL_ORDER, PROBES, write_capacity_run


# cell -> (offered req/s, achieved req/s, share of sends late, client CPU %)
def test_capacity_run_report_orders_cells_and_labels_saturation_by_cause(tmp_path: Path) -> None:
    run_dir = write_capacity_run(tmp_path)
    result = build_report(run_dir)
    summary = pd.read_csv(result.summary_path)
    assert summary["cell"].tolist() == NATURAL_ORDER
    by_cell = summary.set_index("cell")
    np.testing.assert_allclose(by_cell.loc[NATURAL_ORDER, "offered_rps"], [PROBES[c][0] for c in NATURAL_ORDER])

    server = by_cell.loc["b1-row-orjson@640rps"]
    assert server["rps"] < 0.5 * 640
    assert server["late_busy"] == server["late_sends"] > 0
    assert server["trust"].startswith("server saturated: 100% of sends late because their user still waited on")
    assert f"{server['rps']:.4g} of 640 req/s answered" in server["trust"]
    assert server["unanswered"] > 0
    assert bool(server["server_saturated"])
    assert not bool(server["saturated"])
    client = by_cell.loc["b16-row-orjson@45rps"]
    assert bool(client["saturated"])
    assert client["late_idle"] == client["late_sends"] > 0
    assert client["trust"].startswith("client saturated: 33% of sends started late with their user idle")
    assert "busiest generator process at 97% of a core" in client["trust"]
    assert "add --processes" in client["trust"]
    unknown = by_cell.loc["b16-row-orjson@80rps"]
    assert bool(unknown["saturated"])
    assert not bool(unknown["server_saturated"])
    assert unknown["trust"].startswith("behind schedule: 30 late sends, cause not recorded")
    on_time = by_cell.drop(["b1-row-orjson@640rps", "b16-row-orjson@45rps", "b16-row-orjson@80rps"])
    # 150 samples per probe: a p99 without an upper end, said as such; nothing else to note.
    assert (on_time["trust"] == "p99 rough: wide or open 95% interval (150 samples)").all()
    assert not on_time["saturated"].any()
    assert not on_time["server_saturated"].any()

    page = result.html_path.read_text()
    banner = cast("re.Match[str]", re.search(r'<div class="banner warn" id="server-saturated">(.*?)</div>', page))[1]
    assert "b1-row-orjson@640rps" in banner
    assert "b16-row-orjson@80rps" not in banner
    client_banner = cast("re.Match[str]", re.search(r'<div class="banner warn" id="saturated">(.*?)</div>', page))[1]
    assert "b16-row-orjson@45rps" in client_banner
    assert "b1-row-orjson@640rps" not in client_banner
    table = cast("re.Match[str]", re.search(r'<table id="summary">(.*?)</table>', page))[1]
    assert re.findall(r'<td class="l">(b\d+-row-orjson@[^<]+)</td>', table) == NATURAL_ORDER

    # The per-batch-size lines would zig-zag through every probe: left out; the rest stays.
    written = {p.stem for p in result.figure_paths}
    assert not written & PER_BATCH_LINE_FIGURES
    # No probe here failed a request: one line instead of the error-rate figure.
    assert written == {name for name, *_ in FIGURES} - PER_BATCH_LINE_FIGURES - {ERROR_FIGURE}
    assert NO_ERRORS in page
    assert {p.stem for p in (run_dir / runs.FIGURES_DIR).glob("*.png")} == written
    for name in PER_BATCH_LINE_FIGURES:
        assert f'id="fig-{name}"' not in page


def test_capacity_figures_aggregate_per_batch_and_list_cells_naturally(tmp_path: Path) -> None:
    from reports.data import load_run_data
    from reports.figures import fig_encode_cost, fig_error_rate

    data = load_run_data(write_capacity_run(tmp_path, requests_per_probe=60))
    encode = fig_encode_cost(data.summary)
    (line,) = encode.axes[0].get_lines()
    # One point per batch size (not per probe), in batch order.
    # matplotlib types get_xdata()/get_ydata() as any ArrayLike (strings included); these are numeric Series.
    np.testing.assert_allclose(line.get_xdata(), [200_000, 800_000, 3_200_000])  # type: ignore[arg-type]
    np.testing.assert_allclose(line.get_ydata(), [0.9, 3.6, 14.4])  # type: ignore[arg-type]
    errors = fig_error_rate(data.summary)
    assert [t.get_text() for t in errors.axes[0].get_yticklabels()] == NATURAL_ORDER
