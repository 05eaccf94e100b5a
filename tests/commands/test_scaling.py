"""capacity --replicas: the scaling table and the replica plan from measured capacities (pure parts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli import main
from bench.commands.capacity_search import CapacityResult
from bench.commands.scaling import replicas_needed, scaling_table


def _result(rps: float, batch: int = 1) -> CapacityResult:
    return CapacityResult(batch=batch, encoding="row-fast", max_rps=rps, latency_ms_at_max=50.0, samples=500)


def test_efficiency_is_measured_over_n_times_one_replica_and_the_plan_uses_it() -> None:
    one, two = 300.0, 450.0  # two replicas served 1.5x one: 75 % efficiency
    table = scaling_table({1: (Path("r1"), [_result(one)]), 2: (Path("r2"), [_result(two)])})
    row = table[table["replicas"] == 2].iloc[0]
    assert row["predicted_images_per_s"] == pytest.approx(2 * one)
    assert row["efficiency"] == pytest.approx(two / (2 * one))
    assert table[table["replicas"] == 1].iloc[0]["efficiency"] == pytest.approx(1.0)
    measured, predicted = replicas_needed(table, target=2000.0, headroom=0.3)[(1, "row-fast")]
    # Per replica: 225 img/s measured at 2 replicas vs 300 img/s alone, each kept 30 % spare.
    assert measured == -(-2000 // (two / 2 * 0.7))
    assert predicted == -(-2000 // (one * 0.7))
    assert measured > predicted


def test_a_count_that_met_no_slo_has_no_efficiency() -> None:
    table = scaling_table({1: (Path("r1"), [_result(300.0)]), 2: (Path("r2"), [_result(0.0)])})
    assert table[table["replicas"] == 2]["efficiency"].isna().all()


def test_replicas_and_host_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["capacity", "--replicas", "1,2", "--host", "http://127.0.0.1:9"]) == 2
    assert "leave out --host" in capsys.readouterr().err


def test_replicas_refuse_grpc_encodings(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["capacity", "--replicas", "1,2", "--encodings", "row-fast,grpc-tensor-content"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "leave out grpc-tensor-content" in err
    assert len(err.strip().splitlines()) == 1
