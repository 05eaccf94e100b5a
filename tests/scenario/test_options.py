"""The predict scenario's options without Locust: parsing, validation, shape steps."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.errors import ConfigError
from bench.scenario.options import Step, config_from_options, parse_steps
from bench.scenario.schedule import Arrival


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
