"""Shared fixtures: a real SavedModel exported once per session into a temp dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

MODEL_NAME = "classifier"
# Tests whose answers depend on the machine keeping up (capacity searches against servers of a
# known capacity, Locust schedules, verdicts, soaks, several Locust processes) or that share the
# Docker engine and its image tags: marked ``serial``. ``make test`` runs the rest on two
# workers first, then these alone, so no other test competes with them for the CPU.
SERIAL_MODULES = {
    "tests/commands/test_capacity.py",
    "tests/commands/test_capacity_probes.py",
    "tests/commands/test_sweep_verdicts.py",
    "tests/commands/test_tune_embedded.py",
    "tests/scenario/test_locust.py",
    "tests/scenario/test_backoff.py",
    "tests/scenario/test_distributed.py",
    "tests/perf/test_soak.py",
}
REPO = Path(__file__).parent.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = item.path.relative_to(REPO).as_posix()
        if module in SERIAL_MODULES or item.get_closest_marker("docker") is not None:
            item.add_marker(pytest.mark.serial)


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see a developer's TFSBENCH_* settings."""
    for key in list(os.environ):
        if key.startswith("TFSBENCH_"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory holding ``classifier/1``, the tiny reference model."""
    from export import export_model

    out = tmp_path_factory.mktemp("models")
    export_model(out, model_name=MODEL_NAME, version=1, size="tiny")
    return out


@pytest.fixture(scope="session")
def model_base_path(models_dir: Path) -> Path:
    """``models/classifier``: what ``--model_base_path`` points at."""
    return models_dir / MODEL_NAME


@pytest.fixture(scope="session")
def embedded_server(model_base_path: Path):
    """The real embedded server for the tiny model on ephemeral loopback ports: REST (``.url``,
    ``.port``) and gRPC (``.grpc_target``), ``.metrics``; model name ``classifier``."""
    from bench.serving.server import EmbeddedServer

    with EmbeddedServer(model_base_path=model_base_path, model_name=MODEL_NAME, port=0, grpc_port=0) as server:
        yield server


@pytest.fixture(scope="session")
def half_plus_two_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tensorflow/serving's test models, as ``export.half_plus_two`` writes them, each in
    ``<name>/00000123``: ``half_plus_two`` (TF1 graph), ``half_plus_two_tf2`` (tf.Module) and
    ``half_plus_three`` (TF1, ``0.5 * x + 3``)."""
    from export.half_plus_two import export_half_plus_two

    out = tmp_path_factory.mktemp("half_plus_two")
    export_half_plus_two(out)
    export_half_plus_two(out, model_name="half_plus_two_tf2", tf2=True)
    export_half_plus_two(out, model_name="half_plus_three", plus=3.0)
    return out
