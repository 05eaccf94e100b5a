"""Run directories (bench.store.runs): layout, meta.json contents, runs/latest, and what is not a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.errors import ResultsError
from bench.store import provenance, runs


def test_new_run_dir_layout_and_latest(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    first = runs.new_run_dir(out)
    second = runs.new_run_dir(out)
    assert first != second
    assert (second / runs.FIGURES_DIR).is_dir()
    meta = json.loads((second / runs.META_FILE).read_text())
    assert meta["run_id"] == second.name
    # A run is incomplete until its writer says otherwise: a killed sweep never looks finished.
    assert meta["incomplete"] is True
    assert meta["incomplete_reason"] == "running"
    latest = out / runs.LATEST
    assert latest.resolve() == second.resolve()
    assert runs.load_run(latest).path.resolve() == second.resolve()
    # The runs directory itself also resolves through its latest pointer.
    assert runs.load_run(out).run_id == second.name


def test_latest_as_a_file_naming_the_run(tmp_path: Path) -> None:
    run_dir = runs.new_run_dir(tmp_path)
    latest = tmp_path / runs.LATEST
    latest.unlink()
    latest.write_text(run_dir.name + "\n")
    assert runs.load_run(latest).path == run_dir


def test_meta_update_is_merged_and_environment_recorded(tmp_path: Path) -> None:
    run_dir = runs.new_run_dir(tmp_path)
    runs.update_meta(run_dir, **provenance.collect_environment(), config={"batch_sizes": [1, 4]})
    run = runs.load_run(run_dir)
    assert run.meta["config"] == {"batch_sizes": [1, 4]}
    assert run.meta["versions"]["locust"]
    assert run.meta["versions"]["tfsbench"]
    git = run.meta["git"]
    assert ("error" in git) or (len(git["revision"]) == 40 and isinstance(git["dirty"], bool))
    assert run.meta["machine"]["cpu_count"] >= 1
    assert run.machine_id.endswith(f"x{run.meta['machine']['cpu_count']}")
    assert run.incomplete


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda p: p, id="missing"),
        pytest.param(lambda p: (p.mkdir(), p)[1], id="empty-dir"),
        pytest.param(lambda p: (p.write_text("x"), p)[1], id="a-file"),
        pytest.param(lambda p: (p.mkdir(), (p / "meta.json").write_text("[1, 2"), p)[2], id="bad-meta"),
    ],
)
def test_load_run_rejects_what_is_not_a_run(tmp_path: Path, make) -> None:
    path = make(tmp_path / "notarun")
    with pytest.raises(ResultsError, match="notarun"):
        runs.load_run(path)


def test_damaged_meta_with_records_still_loads(tmp_path: Path) -> None:
    run_dir = runs.new_run_dir(tmp_path)
    (run_dir / runs.META_FILE).write_text("{truncated")
    (run_dir / runs.REQUESTS_FILE).write_text("t_start,latency_ms\n")
    run = runs.load_run(run_dir)
    assert run.incomplete
    assert "meta.json unreadable" in run.meta["error"]
