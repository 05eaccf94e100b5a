"""``tfsbench capacity`` end to end: real Locust probes against loopback servers with known capacity.

The servers (tests/capacity_servers.py) serve one request at a time at a fixed cost per request
plus per image, so the capacity the search should find is analytic. Probes are kept short
(small --min-samples, few --max-probes, 10 % tolerance) to fit the test budget on a busy
machine; that is why the expected values carry 15 % margins.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from bench.commands.capacity_run import CAPACITY_COLUMNS, probe_result
from bench.commands.capacity_search import ProbeResult
from bench.store.runs import load_run
from tests.helpers.capacity_servers import ServiceModelServer

# Short, bounded probes: ~150 samples each, at most 10 s, a 10 % bisection tolerance.
FAST = [
    *("--min-samples", "150", "--min-measure-time", "2s", "--max-probe-time", "10s"),
    *("--tolerance", "0.1", "--no-report"),
]


def run_capacity(url: str, out: Path, *extra: str) -> int:
    return main(["capacity", "--host", url, "--out", str(out), *FAST, *extra])


def only_run(out: Path) -> Path:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir() and not p.is_symlink()]
    return run_dir


def test_capacity_matches_the_analytic_service_rate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from reports.report import build_report

    with ServiceModelServer(fixed_s=0.010, per_image_s=0.002) as server:
        rc = run_capacity(
            server.url,
            tmp_path,
            *("--slo", "p99<200ms", "--batch-sizes", "1,4", "--start-rate", "20", "--max-probes", "6"),
            *("--target", "1000img/s", "--headroom", "0.3"),
        )
        expected = {b: server.capacity_rps(b) for b in (1, 4)}  # 83.3 and 55.6 req/s
    assert rc == 0
    run_dir = only_run(tmp_path)
    capacity = pd.read_csv(run_dir / "capacity.csv")
    assert tuple(capacity.columns) == CAPACITY_COLUMNS
    assert list(capacity["batch"]) == [1, 4]
    for _, row in capacity.iterrows():
        batch = int(row["batch"])
        assert row["max_rps"] == pytest.approx(expected[batch], rel=0.15), f"batch {batch}"
        assert row["max_images_per_s"] == pytest.approx(row["max_rps"] * batch)
        assert row["latency_ms_at_max"] <= 200
        assert row["samples"] >= 100
        assert row["replicas"] == math.ceil(1000 / (row["max_images_per_s"] * 0.7))

    # Every probe is in probes.csv and its rows in requests.csv under a cell naming batch and rate.
    probes = pd.read_csv(run_dir / "probes.csv")
    requests = pd.read_csv(run_dir / "requests.csv")
    assert 4 <= len(probes) <= 12
    assert set(requests["cell"]) == set(probes["cell"])
    assert all(c.startswith(f"b{b}-row-orjson@") for c, b in zip(probes["cell"], probes["batch"], strict=True))
    # The step-up went past the server's limit and that probe failed: the search saw the knee.
    for batch in (1, 4):
        mine = probes[probes["batch"] == batch]
        assert not mine[mine["rate_rps"] > expected[batch] * 1.2]["passed"].any()
        assert mine["passed"].any()
    meta = load_run(run_dir).meta
    assert meta["command"] == "capacity"
    assert meta["slo"] == {"text": "p99<200ms", "percentile": 99.0, "limit_ms": 200.0}
    assert len(meta["probes"]) == len(probes)
    assert meta["incomplete"] is False

    out = capsys.readouterr()
    assert "capacity per replica at p99<200ms" in out.out
    assert "best: batch" in out.out
    assert "capacity b1-row-orjson@20rps" in out.err  # a progress line per probe

    # The report carries the capacity section: figure, table and every probe.
    report = build_report(run_dir)
    page = report.html_path.read_text(encoding="utf-8")
    assert 'id="capacity"' in page
    assert 'id="fig-capacity"' in page
    assert 'id="probes-table"' in page
    assert (run_dir / "figures" / "capacity.png").stat().st_size > 10_000


def test_an_slo_no_rate_meets_is_an_answer_not_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with ServiceModelServer(fixed_s=0.020, per_image_s=0.0) as server:
        rc = run_capacity(
            server.url,
            tmp_path,
            *("--slo", "p99<5ms", "--batch-sizes", "1", "--start-rate", "10", "--max-probes", "2"),
            *("--min-samples", "40", "--target", "2000img/s"),
        )
    assert rc == 0
    run_dir = only_run(tmp_path)
    capacity = pd.read_csv(run_dir / "capacity.csv", keep_default_na=False)
    assert len(capacity) == 1
    assert capacity.loc[0, "max_rps"] == 0
    assert capacity.loc[0, "replicas"] == ""
    out = capsys.readouterr().out
    assert "b1 row-orjson: no rate met p99<5ms; lowest probe 5 req/s had p99" in out
    probes = pd.read_csv(run_dir / "probes.csv")
    assert list(probes["rate_rps"]) == [10, 5]
    assert (probes["latency_pct_ms"] >= 20).all()  # the server's own 20 ms, the reason it failed
    assert set(probes["reason"]) == {"slo"}


def test_errors_above_a_rate_cap_the_capacity_below_their_onset(tmp_path: Path) -> None:
    onset = 50.0
    with ServiceModelServer(fixed_s=0.005, per_image_s=0.0, error_above_rps=onset) as server:
        rc = run_capacity(
            server.url,
            tmp_path,
            *("--slo", "p99<100ms", "--batch-sizes", "1", "--start-rate", "15", "--max-probes", "5"),
        )
        assert server.errors > 0
    assert rc == 0
    run_dir = only_run(tmp_path)
    capacity = pd.read_csv(run_dir / "capacity.csv")
    assert 15 <= capacity.loc[0, "max_rps"] <= onset
    probes = pd.read_csv(run_dir / "probes.csv")
    above = probes[probes["rate_rps"] > onset]
    assert not above.empty
    assert (above["errors"] > 0).all()
    assert not above["passed"].any()
    assert "errors" in set(probes["reason"])
    assert load_run(run_dir).meta["capacity"][0]["stopped_by"] == "errors"


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--slo", "p99 under 100ms"], id="bad-slo"),
        pytest.param(["--slo", "p100<100ms"], id="percentile-100"),
        pytest.param(["--headroom", "1.5"], id="headroom-1.5"),
        pytest.param(["--target", "2000req/s"], id="target-not-images"),
        pytest.param(["--arrival", "closed"], id="closed-arrival"),
    ],
)
def test_bad_arguments_exit_2(args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["capacity", "--host", "http://127.0.0.1:9", "--out", str(tmp_path), *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err
    assert "Traceback" not in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--host", "127.0.0.1:8501"], "is not an http:// or https:// URL", id="host-without-scheme"),
        pytest.param(["--encodings", "row-xml"], "unknown encoding 'row-xml'", id="unknown-encoding"),
        pytest.param(["--start-rate", "100", "--max-rate", "50"], "above --max-rate", id="start-above-max"),
        pytest.param(["--max-probe-time", "2s"], "--max-probe-time", id="probe-time-too-short"),
    ],
)
def test_bad_configuration_is_one_line_exit_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["capacity", "--out", str(tmp_path), *args]
    if "--host" not in args:
        argv += ["--host", "http://127.0.0.1:9"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("tfsbench capacity: error:")
    assert message in err[0]
    assert not any(tmp_path.iterdir())


def test_unreachable_host_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with ServiceModelServer() as server:
        url = server.url  # a port that was just free and is closed again below
    assert main(["capacity", "--host", url, "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "cannot reach" in err
    assert "Traceback" not in err


def records(rows: list[tuple[float, float, int, float]]) -> pd.DataFrame:
    """(t_start, latency_ms, status, send_lag_ms) rows as read_records would return them."""
    return pd.DataFrame(
        [
            {
                "t_start": t,
                "latency_ms": lat,
                "status": st,
                "error": "" if st == 200 else f"HTTP {st}",
                "send_lag_ms": lag,
            }
            for t, lat, st, lag in rows
        ]
    )


def test_probe_result_leaves_out_the_warm_up_and_counts_from_the_raw_rows() -> None:
    # 10 req/s for 3 s; the first second is warm-up with slow replies that must not count.
    rows = [(1000.0 + i / 10, 500.0 if i < 10 else 20.0 + i, 200, 0.0) for i in range(30)]
    rows[25] = (rows[25][0], rows[25][1], 503, 0.0)
    rows[27] = (rows[27][0], rows[27][1], 200, 80.0)  # a send 80 ms late
    result, excluded = probe_result(records(rows), 10.0, 99.0, 1.0, 25.0, 4.0)
    assert excluded == 10
    assert result.requests == 20
    assert result.errors == 1
    assert result.late_sends == 1
    assert result.late_allowed == 1
    latencies = [20.0 + i for i in range(10, 30)]
    assert result.latency_pct_ms == pytest.approx(pd.Series(latencies).quantile(0.99))
    # 20 requests from t=1001.0 to the last reply at 1002.9 + 0.049 s.
    assert result.achieved_rps == pytest.approx(20 / 1.949)
    assert not result.saturated


def test_probe_result_without_rows_fails_the_probe() -> None:
    result, excluded = probe_result(pd.DataFrame(), 50.0, 99.0, 1.0, 10.0, 5.0)
    assert excluded == 0
    assert result.requests == 0
    assert isinstance(result, ProbeResult)
    assert not result.meets(1000.0)
    assert result.saturated
