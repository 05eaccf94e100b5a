"""Several replicas as one target: --host URL1,URL2 spreads users, records say who answered, each is scraped."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from bench.api_names import PROMETHEUS_PATH
from bench.errors import ConfigError
from bench.store import runs
from bench.target.replicas import host_for_user, parse_hosts, replica_name
from reports.data import load_run_data, read_run_records
from reports.replicas_section import imbalance, replica_table, replicas_section


def test_hosts_parse_from_commas_or_repeats_and_bad_ones_are_refused() -> None:
    assert parse_hosts("http://a:8501, http://b:8501/") == ("http://a:8501", "http://b:8501")
    assert parse_hosts(["http://a:8501", "http://b:8501,http://c:8501"])[2] == "http://c:8501"
    for bad, says in (("http://a:1,", "empty URL"), ("a:1", "not an http"), ("http://a:1,http://a:1", "twice")):
        with pytest.raises(ConfigError, match=says):
            parse_hosts(bad)


def test_users_take_replicas_in_turn_and_uneven_load_is_named() -> None:
    hosts = ("http://a:1", "http://b:2")
    assert [host_for_user(hosts, i) for i in range(4)] == [*hosts, *hosts]
    assert replica_name("http://b:2") == "b:2"
    assert replica_name("https://b") == "b:443"
    assert imbalance({"a:1": 100, "b:2": 96}) is None
    message = imbalance({"a:1": 100, "b:2": 50})
    assert message is not None
    assert "b:2 served 0.67x its fair share" in message


@pytest.fixture(scope="module")
def two_replicas(model_base_path: Path) -> Iterator[list[str]]:
    from bench.serving.server import EmbeddedServer

    with (
        EmbeddedServer(model_base_path=model_base_path, port=0, prometheus_path=PROMETHEUS_PATH) as a,
        EmbeddedServer(model_base_path=model_base_path, port=0, prometheus_path=PROMETHEUS_PATH) as b,
    ):
        # Fresh replicas: their metrics endpoints answer with no series until they serve a request.
        yield [a.url, b.url]


def test_sweep_over_two_replicas_records_and_scrapes_each(two_replicas: list[str], tmp_path: Path) -> None:
    out = tmp_path / "runs"
    proc = subprocess.run(
        [
            sys.executable, "-m", "bench", "sweep", "--host", two_replicas[0], "--host", two_replicas[1],
            "--batch-sizes", "1", "--encodings", "row-fast", "--users", "4", "--requests", "80",
            "--duration", "60s", "--no-report", "--out", str(out),
        ],
        capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = runs.load_run(out / runs.LATEST)
    names = [replica_name(u) for u in two_replicas]
    assert [r["name"] for r in run.target["replicas"]] == names
    assert all(r["serving"] and r["prometheus"] for r in run.target["replicas"])
    rows = pd.read_csv(run.requests_path, keep_default_na=False)
    (cell,) = run.cells
    assert len(rows) == cell["locust_requests"]
    # 4 users over 2 replicas: two users each, every row names the replica that answered it.
    per_replica = rows["target"].value_counts().to_dict()
    assert set(per_replica) == set(names)
    # Each replica's own Prometheus count of the measured requests, next to the rows it answered.
    by_replica = cell["server_by_replica"]
    assert set(by_replica) == set(names)
    for name in names:
        assert 0 < by_replica[name]["requests"] <= per_replica[name]
    assert cell["server"]["requests"] == pytest.approx(sum(r["requests"] for r in by_replica.values()))
    # The report breaks the cell down per replica (its section alone: the whole page takes long to draw).
    page = replicas_section(run, read_run_records(run))
    assert 'id="replica-table"' in page
    for name in names:
        assert f'<td class="l">{name}</td>' in page
    # The report's own path counts replicas chunk by chunk: the same table as the whole file.
    chunked = load_run_data(run.path, chunk_rows=7).replicas
    pd.testing.assert_frame_equal(chunked, replica_table(run, read_run_records(run)))
    assert chunked["requests"].sum() == len(rows)
