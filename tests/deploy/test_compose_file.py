"""deploy/compose.yaml checked without an engine: docker-compose parses it, the services fit together."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bench import __version__
from bench.docker.loadgen import LOADGEN_TAG
from tests.deploy.manifests import load_documents, yaml_reader

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "deploy" / "compose.yaml"
COMPOSE = shutil.which("docker-compose")


@pytest.mark.skipif(COMPOSE is None or yaml_reader() is None, reason="needs docker-compose and a YAML reader")
def test_compose_file_renders_three_services_that_fit() -> None:
    assert COMPOSE is not None
    env = {"PATH": "/usr/bin:/bin", "SERVING_CPUS": "0.5"}
    proc = subprocess.run(
        [COMPOSE, "-f", str(COMPOSE_FILE), "config"], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr
    # Made a Kubernetes-shaped object, so that kubectl's parser reads it where PyYAML is missing.
    (config,) = load_documents("apiVersion: tfsbench.test/v1\nkind: Compose\nmetadata:\n  name: c\n" + proc.stdout)
    services = config["services"]
    assert set(services) == {"serving", "master", "worker"}
    serving, master, worker = services["serving"], services["master"], services["worker"]
    assert serving["image"] == "tensorflow/serving"
    assert float(serving["cpus"]) == 0.5
    # Ephemeral loopback host ports: --scale serving=N must not collide.
    assert sorted(serving["ports"]) == ["127.0.0.1::8500/tcp", "127.0.0.1::8501/tcp"]
    (models,) = [v for v in serving["volumes"] if ":/models/" in v]
    assert models.endswith(":ro")
    assert master["image"] == worker["image"] == LOADGEN_TAG == f"tfsbench/loadgen:{__version__}"
    assert "--expect-workers" in " ".join(master["command"])
    assert any(v.split(":")[1] == "/runs" for v in master["volumes"])
    assert worker["command"][worker["command"].index("--master-host") + 1] == "master"
