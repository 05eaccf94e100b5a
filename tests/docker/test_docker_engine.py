"""``tfsbench docker`` against a real Docker engine, with the offline stand-in image.

Skipped, with the reason, where no engine answers (``.ci/run`` installs docker.io and starts
dockerd; elsewhere start one yourself) or the host cannot assemble the stand-in (not Debian).
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from bench.cli import main
from bench.docker.engine import container_inspect, docker, engine_version
from bench.docker.launcher import (
    ContainerSpec,
    RunningContainer,
    container_meta,
    down,
    logs,
    up,
)
from bench.docker.standin import STANDIN_TAG, build_standin
from bench.errors import DockerError
from bench.serving.metrics import monitoring_config_text

pytestmark = pytest.mark.docker
STARTUP_TIMEOUT_S = 300.0  # TensorFlow's import on 2 busy cores


def skip_unless_required(reason: str) -> None:
    """Skip, or fail where CI could start an engine (.ci/run sets CI_DOCKER_REQUIRED=1): a skip there hides a gap."""
    if os.environ.get("CI_DOCKER_REQUIRED") == "1":
        pytest.fail(f"Docker tests must run here (CI_DOCKER_REQUIRED=1) but: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def engine() -> str:
    if shutil.which("docker") is None:
        skip_unless_required("no docker CLI on PATH (.ci/run installs docker.io; or apt-get install docker.io)")
    try:
        return engine_version()
    except DockerError as exc:
        skip_unless_required(f"no Docker engine answers: {exc}")
        raise


@pytest.fixture(scope="module")
def standin(engine: str) -> str:
    """The stand-in image, built once (reused while the project sources are unchanged)."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        skip_unless_required("building the stand-in needs apt-get and dpkg-deb (a Debian host)")
    try:
        build_standin(STANDIN_TAG, log=lambda _message: None)
    except DockerError as exc:
        if "cannot download Debian packages" not in str(exc):
            raise
        skip_unless_required(f"the stand-in cannot be built here: {exc}")
    return STANDIN_TAG


def unique_name(prefix: str = "tfsbench-test") -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def container(
    standin: str, model_base_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningContainer]:
    config = tmp_path_factory.mktemp("docker-config")
    monitoring = config / "monitoring.txt"
    monitoring.write_text(monitoring_config_text())
    spec = ContainerSpec.create(
        model_base_path,
        image=standin,
        name=unique_name(),
        host_port=0,
        cpus=1.0,
        memory="2g",
        monitoring_config_file=monitoring,
        extra_server_args=("--tensorflow_intra_op_parallelism=1",),
    )
    running = up(spec, timeout_s=STARTUP_TIMEOUT_S)
    try:
        yield running
    finally:
        down(running.name)


def test_up_serves_the_same_predictions_as_the_model_in_process(
    container: RunningContainer, model_base_path: Path
) -> None:
    import tensorflow as tf

    assert container.model_version == 1
    assert container.url.startswith("http://127.0.0.1:")
    batch = np.random.default_rng(7).integers(0, 256, size=(3, 128, 128, 3), dtype=np.uint8)
    reply = requests.post(
        f"{container.url}/v1/models/classifier:predict", json={"instances": batch.tolist()}, timeout=60
    )
    assert reply.status_code == 200, reply.text
    predictions = reply.json()["predictions"]
    expected = tf.saved_model.load(str(model_base_path / "1")).signatures["serving_default"](
        examples=tf.constant(batch)
    )
    np.testing.assert_allclose(
        [p["probabilities"] for p in predictions], expected["probabilities"].numpy(), rtol=1e-5, atol=1e-6
    )
    assert [p["classes"] for p in predictions] == expected["classes"].numpy().tolist()


def test_the_standin_answers_grpc_through_the_published_port(
    container: RunningContainer, model_base_path: Path
) -> None:
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import (
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    assert container.grpc_target.startswith("127.0.0.1:")
    assert container.grpc_target != container.url.removeprefix("http://")
    batch = np.random.default_rng(8).integers(0, 256, size=(3, 128, 128, 3), dtype=np.uint8)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "classifier"
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto(batch))
    with grpc.insecure_channel(container.grpc_target) as channel:
        reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=120)
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "classifier"}), timeout=60
        )
    assert [(row.version, row.state) for row in status.model_version_status] == [(1, 30)]
    expected = tf.saved_model.load(str(model_base_path / "1")).signatures["serving_default"](
        examples=tf.constant(batch)
    )
    np.testing.assert_allclose(
        tf.make_ndarray(reply.outputs["probabilities"]), expected["probabilities"].numpy(), rtol=1e-5, atol=1e-6
    )
    assert tf.make_ndarray(reply.outputs["classes"]).tolist() == expected["classes"].numpy().tolist()


def test_monitoring_flag_reaches_the_server(container: RunningContainer) -> None:
    reply = requests.get(f"{container.url}/monitoring/prometheus/metrics", timeout=30)
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("text/plain")


def test_container_meta_records_image_digest_and_limits(container: RunningContainer) -> None:
    from bench.docker.standin import SOURCE_LABEL

    meta = container_meta(container.name)
    assert meta["image"] == STANDIN_TAG
    assert meta["image_id"].startswith("sha256:")
    assert meta["cpus"] == 1.0
    assert meta["memory_bytes"] == 2 * 1024**3
    assert SOURCE_LABEL in meta["image_labels"]
    assert "--tensorflow_intra_op_parallelism=1" in meta["args"]
    json.dumps(meta)  # goes into meta.json as is


def test_logs_show_the_stand_ins_translation(container: RunningContainer, capsys: pytest.CaptureFixture[str]) -> None:
    text = logs(container.name)
    assert "accepted but not implemented: --tensorflow_intra_op_parallelism=1" in text
    assert main(["docker", "logs", "--name", container.name, "--tail", "400"]) == 0
    assert "tfsbench stand-in" in capsys.readouterr().out


def test_name_already_taken(container: RunningContainer, model_base_path: Path) -> None:
    spec = ContainerSpec.create(model_base_path, image=STANDIN_TAG, name=container.name, host_port=0)
    with pytest.raises(DockerError, match=f"a container named {container.name} already exists"):
        up(spec)


def test_port_in_use(standin: str, model_base_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        spec = ContainerSpec.create(model_base_path, image=standin, name=unique_name(), host_port=port)
        with pytest.raises(DockerError, match=f"port {port} on 127.0.0.1 is already in use"):
            up(spec)
    assert container_inspect(spec.name) is None


@pytest.mark.parametrize(
    ("image", "hint"),
    [
        ("tfsbench-test/not-built:0", "docker pull tfsbench-test/not-built:0"),
        ("tfsbench/serving-standin:nope", "build-standin"),
    ],
)
def test_image_not_present_says_how_to_get_it(engine: str, model_base_path: Path, image: str, hint: str) -> None:
    spec = ContainerSpec.create(model_base_path, image=image, name=unique_name(), host_port=0)
    with pytest.raises(DockerError, match=f"image {image} is not present locally") as exc:
        up(spec)
    assert hint in str(exc.value)


def test_container_that_exits_reports_its_log_tail(standin: str, model_base_path: Path) -> None:
    spec = ContainerSpec.create(
        model_base_path, image=standin, name=unique_name(), host_port=0, extra_server_args=("--no_such_flag=1",)
    )
    with pytest.raises(DockerError, match="exited with code 1 before model 'classifier' was AVAILABLE") as exc:
        up(spec, timeout_s=120)
    assert "unknown command line flag 'no_such_flag'" in str(exc.value)
    assert container_inspect(spec.name) is None  # nothing half-started left behind


def test_sweep_docker_starts_records_and_stops(standin: str, model_base_path: Path, tmp_path: Path) -> None:
    from bench.store.runs import load_run

    argv = ["sweep", "--docker", standin, "--model-base-path", str(model_base_path), "--cpus", "1"]
    argv += ["--batch-sizes", "1,4", "--requests", "12", "--users", "2", "--no-report", "--out", str(tmp_path)]
    assert main(argv) == 0
    run = load_run(tmp_path / "latest")
    meta = json.loads((run.path / "meta.json").read_text())
    assert meta["docker"]["image"] == standin
    assert meta["docker"]["cpus"] == 1.0
    assert meta["docker"]["image_id"].startswith("sha256:")
    assert meta["target"]["server_kind"] == "embedded"  # the stand-in's server says what it is
    assert container_inspect(meta["docker"]["container"]) is None  # stopped and removed
    with (run.path / "requests.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) >= 24
    assert {row["status"] for row in rows} == {"200"}


def test_stop_is_a_clean_sigterm(container: RunningContainer) -> None:
    # Last test of the module: it stops the shared container (the fixture then removes it).
    # PID 1 ignores SIGTERM unless it handles it: docker stop would then SIGKILL (137) after 30 s.
    docker(["stop", "-t", "30", container.name], timeout_s=120)
    state = container_inspect(container.name)
    assert state is not None
    assert state["State"]["ExitCode"] == 0
    assert not state["State"]["OOMKilled"]
    assert down(container.name) is True
    assert container_inspect(container.name) is None


def test_tune_docker_measures_each_configuration_in_its_own_container(
    standin: str, model_base_path: Path, tmp_path: Path
) -> None:
    """tfsbench tune through the stand-in: batching off and the guide's start, one container each, both gone after."""
    import pandas as pd

    from bench.store.runs import load_run

    argv = ["tune", "--docker", standin, "--model-base-path", str(model_base_path), "--cpus", "1",
            "--space", "max_batch_size=8;batch_timeout_micros=0;num_batch_threads=1", "--slo", "p99<500ms",
            "--min-samples", "100", "--min-measure-time", "1", "--warmup-time", "0.5", "--max-probes", "3",
            "--tolerance", "0.5", "--calibration-time", "1", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    run = load_run(tmp_path / "latest")
    tune = pd.read_csv(run.path / "tune.csv")
    assert tune["config"].tolist() == ["off", "mbs8-btm0-nbt1"]
    assert tune["met_slo"].any()
    assert (run.path / "report.html").is_file()
    leftover = docker(["ps", "-a", "--filter", "name=tfsbench-tune-", "--format", "{{.Names}}"]).stdout.strip()
    assert leftover == ""
