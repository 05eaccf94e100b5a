"""``tfsbench tune`` on the embedded server with the tiny model and single-image clients.

A real tune (one ``tfsbench serve`` per configuration, real capacity searches through Locust),
interrupted by its --max-configs after two configurations and resumed to three: batching off
plus two batching configurations. Checked against what the numbers say, not a mock of them: the
front in tune.csv is the Pareto set of the measured points, the recommendation meets the SLO and
is the front's highest throughput, and the recommended file is what the server reads.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

from bench.serving.batching import parse_batching_parameters
from bench.store import runs

SPACE = "max_batch_size=4,16;batch_timeout_micros=0,2000;num_batch_threads=1"
LIMIT_MS = 500.0  # generous: the checks are about what tune does with its numbers
# Short probes: the test checks what the tune does with its measurements, not their precision.
FAST = ["--min-samples", "100", "--min-measure-time", "1", "--warmup-time", "0.5", "--max-probes", "3",
        "--tolerance", "0.5", "--calibration-time", "1"]  # fmt: skip


def _tune(model_base_path: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", "tune", "--embedded", "--model-base-path", str(model_base_path),
         "--space", SPACE, "--slo", f"p99<{LIMIT_MS:g}ms", "--out", str(out), *FAST, *extra],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def test_tune_resumes_and_its_front_is_the_pareto_set(model_base_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    first = _tune(model_base_path, out, "--max-configs", "2", "--no-report")
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = runs.resolve_run_path(out / runs.LATEST)
    assert pd.read_csv(run_dir / "tune.csv")["config"].tolist() == ["off", "mbs16-btm0-nbt1"]  # baseline, guide's start

    second = _tune(model_base_path, out, "--max-configs", "3", "--resume", str(run_dir))
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stderr.count("finished before") == 2  # replayed, not measured again
    tune = pd.read_csv(run_dir / "tune.csv")
    assert tune["config"].nunique() == 3
    assert tune["batching"].tolist().count(False) == 1

    points = tune[tune["config_point"]]
    assert len(points) >= 1, tune.to_string()
    pareto = {
        p.config
        for p in points.itertuples()
        if not any(q.max_images_per_s >= p.max_images_per_s and q.latency_ms_at_max <= p.latency_ms_at_max
                   and (q.max_images_per_s, q.latency_ms_at_max) != (p.max_images_per_s, p.latency_ms_at_max)
                   for q in points.itertuples())
    }  # fmt: skip
    assert set(tune.loc[tune["on_front"], "config"]) == pareto
    best = tune[tune["recommended"]]
    assert len(best) == 1
    row = best.iloc[0]
    assert row["met_slo"]
    assert row["latency_ms_at_max"] < LIMIT_MS
    assert row["max_images_per_s"] == points["max_images_per_s"].max()

    recommended = run_dir / "batching_parameters.txt"
    if row["batching"]:
        params = parse_batching_parameters(recommended)
        assert (params.max_batch_size, params.batch_timeout_micros, params.num_batch_threads) == (
            row["max_batch_size"], row["batch_timeout_micros"], row["num_batch_threads"])  # fmt: skip
    else:
        assert not recommended.exists()
    assert "recommended:" in second.stdout
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "What this tune says" in page
    assert (run_dir / "figures" / "tune_front.png").is_file()
    meta = runs.load_run(run_dir).meta
    assert not meta["incomplete"]
    assert meta["recommended"] == row["config"]


def test_bad_tune_arguments_are_one_line(model_base_path: Path, tmp_path: Path) -> None:
    cases = [
        (["--embedded", "--space", "max_batch_size=8;bogus=1"], "NAME one of"),
        (["--space", "max_batch_size=8"], "give one target"),
        (["--embedded", "--space", "max_batch_size=8", "--cpus", "1"], "--cpus/--memory limit a container"),
    ]
    for args, message in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "bench", "tune", "--model-base-path", str(model_base_path), "--out", str(tmp_path),
             *args], capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert message in lines[0]
    assert not list(tmp_path.iterdir())  # nothing started, nothing written
