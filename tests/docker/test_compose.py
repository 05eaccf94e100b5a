"""deploy/compose.yaml for real: 2 serving replicas (the stand-in) + a Locust master running a sweep + 2 workers.

Skipped, with the reason, where no engine answers or the images cannot be built (as the other
Docker tests); under CI_DOCKER_REQUIRED=1 (``.ci/run``, which also installs docker-compose) a
missing piece fails instead.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from bench.docker.engine import docker
from bench.docker.loadgen import LOADGEN_TAG, build_loadgen
from bench.store import runs
from tests.docker.test_docker_engine import engine, skip_unless_required, standin  # noqa: F401  (fixtures)

pytestmark = pytest.mark.docker
COMPOSE_FILE = Path(__file__).resolve().parents[2] / "deploy" / "compose.yaml"
RUN_TIMEOUT_S = 420  # two replicas importing TensorFlow, then one short cell, on 2 busy cores


@pytest.fixture(scope="module")
def images(standin: str) -> tuple[str, str]:  # noqa: F811  (the fixture imported above)
    """(stand-in, load generator): built once, reused while the sources are unchanged."""
    build_loadgen(LOADGEN_TAG, standin_tag=standin, log=lambda _message: None)
    return standin, LOADGEN_TAG


def _compose() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        skip_unless_required("no docker-compose on PATH (.ci/run installs it; or apt-get install docker-compose)")
    assert found is not None
    return found


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[list[str], str]]:
    """The compose command for a project of our own, torn down (containers, network) after the test."""
    name = f"tfsbench-compose-{secrets.token_hex(3)}"
    command = [_compose(), "-f", str(COMPOSE_FILE), "-p", name]
    yield command, name
    subprocess.run([*command, "down", "--volumes", "--remove-orphans", "-t", "5"], capture_output=True, timeout=180)


def _left(name: str) -> tuple[str, str]:
    containers = docker(["ps", "-aq", "--filter", f"label=com.docker.compose.project={name}"], check=False)
    networks = docker(["network", "ls", "-q", "--filter", f"label=com.docker.compose.project={name}"], check=False)
    return containers.stdout.strip(), networks.stdout.strip()


def test_compose_two_replicas_master_and_two_workers(
    images: tuple[str, str], model_base_path: Path, tmp_path: Path, project: tuple[list[str], str]
) -> None:
    command, name = project
    serving_image, loadgen = images
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    replicas = [f"http://{name}_serving_{i}:8501" for i in (1, 2)]
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "SERVING_IMAGE": serving_image,
        "LOADGEN_IMAGE": loadgen,
        "MODEL_DIR": str(model_base_path),
        "MODEL_NAME": "classifier",
        "RUNS_DIR": str(runs_dir),
        "WORKERS": "2",
        "TFSBENCH_ARGS": f"--host {','.join(replicas)} --batch-sizes 1 --encodings row-fast --users 4 "
        "--duration 6s --no-report --workers-wait 240s",
    }
    up = subprocess.run(
        [*command, "up", "-d", "--scale", "serving=2", "--scale", "worker=2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert up.returncode == 0, up.stderr[-2000:]
    master = f"{name}_master_1"
    try:
        waited = docker(["wait", master], timeout_s=RUN_TIMEOUT_S, check=False)
    finally:
        logs = subprocess.run([*command, "logs", "--no-color", "--tail", "40"], env=env, capture_output=True, text=True)
    assert waited.stdout.strip() == "0", logs.stdout[-4000:]

    run = runs.load_run(runs_dir / runs.LATEST)
    (cell,) = run.cells
    rows = pd.read_csv(run.requests_path, keep_default_na=False)
    assert not run.incomplete, run.incomplete_reason
    assert len(rows) == cell["locust_requests"] > 0
    assert rows["worker"].nunique() == 2  # both workers' rows reached the master over Locust's messages
    # Both replicas served: the rows name them, and each one's own Prometheus count says so.
    served = rows["target"].value_counts().to_dict()
    assert set(served) == {f"{name}_serving_{i}:8501" for i in (1, 2)}
    by_replica = cell["server_by_replica"]
    assert set(by_replica) == set(served)
    for replica, count in served.items():
        assert 0 < by_replica[replica]["requests"] <= count

    subprocess.run([*command, "down", "--volumes", "--remove-orphans", "-t", "5"], env=env, timeout=180, check=True)
    assert _left(name) == ("", "")
