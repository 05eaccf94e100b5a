"""The tune page says what tune.csv says: the recommendation, the ratio to batching off, the
front, and a warning where the load generator was the limit; tfsbench compare lines two up."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.cli import main
from bench.commands.tune import TUNE_COLUMNS
from bench.store import runs
from reports.tune_report import answer_lines, build_tune_report, read_tune


def _row(config: str, images: float, latency: float, **fields: object) -> dict[str, object]:
    batching = config != "off"
    return {
        "config": config, "batching": batching, "batch_timeout_micros": 0 if batching else None,
        "max_batch_size": 16 if batching else None, "num_batch_threads": 2 if batching else None,
        "max_enqueued_batches": 1_000_000 if batching else None, "client_batch": 1, "encoding": "row-orjson",
        "max_images_per_s": images, "max_rps": images, "latency_ms_at_max": latency, "latency_ci_low_ms": None,
        "latency_ci_high_ms": None, "limited_by": "slo", "met_slo": images > 0, "server_cpu_pct": 90.0,
        "server_peak_rss_mb": 650.0, "capacity_run": f"configs/{config}/x", "config_point": images > 0,
        "on_front": False, "recommended": False, **fields,
    }  # fmt: skip


def _tune_run(out: Path, rows: list[dict[str, object]]) -> Path:
    run_dir = runs.new_run_dir(out)
    runs.update_meta(
        run_dir, command="tune", incomplete=False,
        config={"capacity": {"percentile": 99.0, "limit_ms": 100.0, "model_name": "classifier"}, "grid_size": 9,
                "space": {"max_batch_size": [16]}, "target": {"image": None}},
    )  # fmt: skip
    pd.DataFrame(rows, columns=list(TUNE_COLUMNS)).to_csv(run_dir / "tune.csv", index=False)
    return run_dir


def test_the_page_states_the_recommendation_the_front_and_the_generator_warning(tmp_path: Path) -> None:
    run_dir = _tune_run(
        tmp_path,
        [
            _row("off", 200.0, 40.0, on_front=True),
            _row("mbs16-btm0-nbt2", 500.0, 80.0, on_front=True, recommended=True),
            _row("mbs16-btm2000-nbt2", 300.0, 90.0, limited_by="generator"),
        ],
    )
    lines = answer_lines(read_tune(run_dir), "p99")
    assert lines[0].startswith("Recommended: mbs16-btm0-nbt2: 500 images/s")
    assert "Batching off serves 200 images/s: the recommendation is 2.50x." in lines
    assert "The front has 2 of 3 configurations: mbs16-btm0-nbt2, off." in lines
    assert any("load generator, not the server, limited 1 configuration(s) (mbs16-btm2000-nbt2)" in t for t in lines)
    page = build_tune_report(run_dir).read_text(encoding="utf-8")
    assert "mbs16-btm0-nbt2 ★" in page
    assert (run_dir / "figures" / "tune_front.png").stat().st_size > 10_000


def test_compare_lines_two_tunes_up(tmp_path: Path, capsys) -> None:
    a = _tune_run(tmp_path / "a", [_row("off", 200.0, 40.0), _row("mbs16-btm0-nbt2", 400.0, 80.0, recommended=True)])
    b = _tune_run(tmp_path / "b", [_row("off", 100.0, 40.0), _row("mbs16-btm0-nbt2", 600.0, 70.0, recommended=True)])
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("mbs16-btm0-nbt2"))
    assert "1.50" in row  # 600 / 400
    assert "AB" in row  # recommended by both
    assert (tmp_path / "cmp" / "compare.html").is_file()
    table = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    assert table.set_index("config").loc["off", "ratio"] == 0.5
