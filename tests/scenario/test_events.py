"""The predict scenario without Locust: option parsing, response checks, worker file naming and merging."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest

from bench.errors import ConfigError
from bench.scenario.events import main
from bench.scenario.options import Step, config_from_options, parse_steps
from bench.scenario.schedule import Arrival
from bench.store.record_parts import merge_parts, part_files, records_path_for
from bench.store.records import LoadStats, RecordWriter, RequestRecord, read_load_stats, read_records, write_load_stats
from bench.target.response_check import check_predict_response, prediction_count


def _options(**overrides: object) -> SimpleNamespace:
    values: dict[str, object] = {
        "model_name": "classifier",
        "model_version": "",
        "signature_name": "",
        "batch_sizes": "1",
        "encodings": "row-orjson",
        "images": "",
        "pool_size": "8",
        "warmup": "0",
        "arrival": "closed",
        "rate": "",
        "think_time": "0",
        "records": "",
        "cell": "locust",
        "encode_inline": False,
        "shape_steps": "",
        "step_time": "30s",
        "cpu_warn_pct": "90",
    }
    values.update(overrides)
    return SimpleNamespace(**values)


def test_config_from_options_parses_the_contract_values() -> None:
    config = config_from_options(
        _options(
            model_version="3",
            batch_sizes="1:3,16:1",
            encodings="row-orjson,b64-png",
            arrival="poisson",
            rate="150",
            records="runs/x/requests.csv",
        )
    )
    assert config.predict_path == "/v1/models/classifier/versions/3:predict"
    assert config.batches == ((1, 3), (16, 1))
    assert config.encodings == ("row-orjson", "b64-png")
    assert config.arrival == Arrival("poisson", 150.0)
    assert config.records == Path("runs/x/requests.csv")
    assert config_from_options(_options()).predict_path == "/v1/models/classifier:predict"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"encodings": "row-orjson,nope"}, "nope", id="unknown-encoding"),
        pytest.param({"batch_sizes": "a"}, "--batch-sizes: 'a' is not an integer", id="bad-batch"),
        pytest.param({"model_name": "a/b"}, "not a model name", id="bad-model"),
        pytest.param({"images": "/nonexistent/dir"}, "is not a directory", id="missing-images"),
        pytest.param({"shape_steps": "rate=10,20"}, "needs an open model", id="rate-steps-closed"),
        pytest.param({"arrival": "constant"}, "needs a positive --rate", id="open-without-rate"),
    ],
)
def test_config_from_options_rejects_bad_values(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_options(_options(**overrides))


def test_parse_steps() -> None:
    assert parse_steps("batch=1,4") == (Step(batch=1), Step(batch=4))
    assert parse_steps("rate=10,2.5") == (Step(rate_per_s=10.0), Step(rate_per_s=2.5))
    assert parse_steps("") == ()
    assert Step(batch=4).label("c") == "c/b=4"
    assert Step(rate_per_s=2.5).label("c") == "c/rate=2.5"
    with pytest.raises(argparse.ArgumentTypeError, match="not a step list"):
        parse_steps("users=1,2")


@pytest.mark.parametrize(
    ("status", "body", "batch", "expected"),
    [
        pytest.param(200, {"predictions": [{"classes": 1}] * 4}, 4, "", id="row-ok"),
        pytest.param(200, {"outputs": {"classes": [1, 2], "probabilities": [[0.1], [0.2]]}}, 2, "", id="columnar-ok"),
        pytest.param(200, {"predictions": [1, 2, 3]}, 4, "expected 4 predictions, got 3", id="wrong-count"),
        pytest.param(200, {"result": 1}, 1, "response has neither 'predictions' nor 'outputs'", id="no-predictions"),
        pytest.param(
            404,
            {"error": "Servable not found for request: Latest(x)"},
            1,
            "HTTP 404: Servable not found for request: Latest(x)",
            id="error-body",
        ),
    ],
)
def test_check_predict_response(status: int, body: dict, batch: int, expected: str) -> None:
    assert check_predict_response(status, orjson.dumps(body), batch) == expected


def test_check_predict_response_without_a_json_body() -> None:
    assert check_predict_response(404, b"<html>Not Found</html>", 1) == "HTTP 404: <html>Not Found</html>"
    assert check_predict_response(400, b"", 1) == "HTTP 400: (empty body)"
    assert check_predict_response(200, b"{oops", 1).startswith("response is not JSON")
    assert prediction_count([1, 2]) is None


def _write_part(path: Path, rows: int, finished: bool, cell: str) -> None:
    with RecordWriter(path) as writer:
        writer.write_many(
            RequestRecord(1000.0 + i, 5.0, 200, 1, "row-orjson", 10, 1.0, 5, "", cell) for i in range(rows)
        )
    write_load_stats(path, LoadStats(warmup_by_cell={cell: 1}, finished=finished))


def test_worker_files_merge_only_when_finished(tmp_path: Path) -> None:
    target = tmp_path / "requests.csv"
    assert records_path_for(target, distributed=False) == target
    first, second = records_path_for(target, True, pid=11), records_path_for(target, True, pid=12)
    assert first.name == "requests.11.csv"
    _write_part(first, 30, finished=True, cell="a")
    _write_part(second, 20, finished=False, cell="a")
    (tmp_path / "requests.summary.csv").write_text("not a part")
    assert part_files(target) == [first, second]

    assert merge_parts(target) == 30  # the unfinished file is left alone
    assert second.exists()
    assert not first.exists()
    assert len(read_records(target)) == 30

    assert main(["merge", str(target), "--force"]) == 0  # e.g. a worker that was killed
    assert not second.exists()
    assert len(read_records(target)) == 50
    load = read_load_stats(target)
    assert load is not None
    assert load.warmup_by_cell == {"a": 2}
    assert load.processes == 2
