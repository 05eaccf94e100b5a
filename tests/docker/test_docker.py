"""``tfsbench docker`` without an engine: command construction, flag mapping, errors, the init."""

from __future__ import annotations

import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.docker import entrypoint
from bench.docker.engine import check_port_free
from bench.docker.launcher import (
    CONTAINER_CONFIG_DIR,
    DEFAULT_IMAGE,
    ContainerSpec,
    check_model_dir,
    docker_run_command,
    format_command,
    publish_arg,
)
from bench.errors import ConfigError, DockerError
from bench.serving import flags
from bench.serving.metrics import monitoring_config_text

# The seed article's command (shared/seed, section "2. Start a Server to Wait for Requests").
SEED_COMMAND = (
    "docker run -p 8501:8501 --mount type=bind,source=/path/to/my_model/,target=/models/my_model "
    "-e MODEL_NAME=my_model -t tensorflow/serving"
)
_VALUE_OPTIONS = {"-p", "--mount", "-e", "--name", "--label", "--cpus", "--memory"}


def parse_run(argv: list[str]) -> tuple[dict[str, list[str]], str, list[str]]:
    """``docker run`` argv -> (options with their values, image, arguments after the image)."""
    assert argv[:2] == ["docker", "run"]
    options: dict[str, list[str]] = {}
    i = 2
    while argv[i].startswith("-"):
        if argv[i] in _VALUE_OPTIONS:
            options.setdefault(argv[i], []).append(argv[i + 1])
            i += 2
        else:
            options.setdefault(argv[i], [])
            i += 1
    return options, argv[i], argv[i + 1 :]


def mount_fields(value: str) -> dict[str, str]:
    fields = dict(item.partition("=")[::2] for item in value.split(","))
    fields["source"] = fields["source"].rstrip("/")
    return fields


def fake_model(root: Path, versions: tuple[str, ...] = ("1",)) -> Path:
    """A model directory laid out like an export (the checks only look at the layout)."""
    base = root / "classifier"
    for version in versions:
        (base / version / "variables").mkdir(parents=True)
        (base / version / "saved_model.pb").write_bytes(b"\n")
    return base


def test_generated_command_matches_the_seed_article() -> None:
    seed_options, seed_image, _ = parse_run(shlex.split(SEED_COMMAND))
    spec = ContainerSpec.create(Path("/path/to/my_model"), image="tensorflow/serving", bind_address="0.0.0.0")
    options, image, server_args = parse_run(docker_run_command(spec))

    assert image == seed_image == DEFAULT_IMAGE
    # The seed publishes REST only; gRPC's 8500 is published beside it, as tensorflow/serving's docs show.
    assert options["-p"] == [*seed_options["-p"], "8500:8500"] == ["8501:8501", "8500:8500"]
    assert [mount_fields(m) for m in options["--mount"]] == [mount_fields(m) for m in seed_options["--mount"]]
    assert options["-e"] == seed_options["-e"] == ["MODEL_NAME=my_model"]
    assert server_args == []
    # We run detached and remove on `down`: -d instead of the seed's interactive -t.
    assert "-d" in options
    assert "-t" in seed_options


def test_default_publishes_on_loopback_only() -> None:
    spec = ContainerSpec.create(Path("/srv/models/classifier"))
    options, image, _ = parse_run(docker_run_command(spec))
    assert options["-p"] == ["127.0.0.1:8501:8501", "127.0.0.1:8500:8500"]
    assert mount_fields(options["--mount"][0]) == {
        "type": "bind",
        "source": "/srv/models/classifier",
        "target": "/models/classifier",
    }
    assert options["-e"] == ["MODEL_NAME=classifier"]
    assert image == "tensorflow/serving"


@pytest.mark.parametrize(
    ("host_port", "bind", "expected"),
    [
        (8501, "127.0.0.1", "127.0.0.1:8501:8501"),
        (9000, "127.0.0.1", "127.0.0.1:9000:8501"),
        (0, "127.0.0.1", "127.0.0.1::8501"),
        (0, "0.0.0.0", "8501"),
        (9000, "0.0.0.0", "9000:8501"),
    ],
)
def test_publish_argument(host_port: int, bind: str, expected: str) -> None:
    spec = ContainerSpec.create(Path("/m/classifier"), host_port=host_port, bind_address=bind)
    assert publish_arg(spec) == expected


@pytest.mark.parametrize(
    ("host_port", "grpc_port", "expected"),
    [(8501, None, "127.0.0.1:8500:8500"), (0, None, "127.0.0.1::8500"), (9000, 9001, "127.0.0.1:9001:8500")],
)
def test_grpc_publish_argument_follows_the_rest_port_unless_given(
    host_port: int, grpc_port: int | None, expected: str
) -> None:
    spec = ContainerSpec.create(Path("/m/classifier"), host_port=host_port, grpc_host_port=grpc_port)
    assert publish_arg(spec, 8500) == expected


def test_limits_batching_and_monitoring_map_to_docker_and_server_flags(tmp_path: Path) -> None:
    batching = tmp_path / "batching.txt"
    monitoring = tmp_path / "monitoring.txt"
    spec = ContainerSpec.create(
        tmp_path / "models" / "resnet",
        image="tensorflow/serving:2.18.0",
        name="bench1",
        cpus=1.5,
        memory="2g",
        batching_parameters_file=batching,
        monitoring_config_file=monitoring,
        extra_server_args=("--rest_api_num_threads=8",),
    )
    options, image, server_args = parse_run(docker_run_command(spec))
    assert image == "tensorflow/serving:2.18.0"
    assert options["--name"] == ["bench1"]
    assert options["--cpus"] == ["1.5"]
    assert options["--memory"] == ["2g"]
    assert options["-e"] == ["MODEL_NAME=resnet"]
    mounts = {m["target"]: m for m in map(mount_fields, options["--mount"])}
    assert mounts["/models/resnet"]["source"] == str(tmp_path / "models" / "resnet")
    assert mounts[f"{CONTAINER_CONFIG_DIR}/batching_parameters.txt"]["source"] == str(batching)
    assert mounts[f"{CONTAINER_CONFIG_DIR}/monitoring_config.txt"]["source"] == str(monitoring)
    assert "readonly" in options["--mount"][1]
    assert "readonly" in options["--mount"][2]
    assert server_args == [
        "--enable_batching=true",
        f"--batching_parameters_file={CONTAINER_CONFIG_DIR}/batching_parameters.txt",
        f"--monitoring_config_file={CONTAINER_CONFIG_DIR}/monitoring_config.txt",
        "--rest_api_num_threads=8",
    ]


def test_monitoring_config_turns_on_prometheus() -> None:
    text = monitoring_config_text()
    assert "prometheus_config {" in text
    assert "enable: true" in text
    assert 'path: "/monitoring/prometheus/metrics"' in text


def test_dry_run_warns_about_a_model_dir_it_cannot_serve(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_exported = tmp_path / "classifier"
    not_exported.mkdir()
    assert main(["docker", "up", "--dry-run", "--model-base-path", str(not_exported)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("docker run ")
    assert "warning:" in captured.err
    assert "no numeric version directory" in captured.err


def test_dry_run_prints_the_exact_command_without_docker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    batching = tmp_path / "batching.txt"
    batching.write_text("max_batch_size { value: 32 }\n")
    argv = ["docker", "up", "--dry-run", "--model-base-path", str(tmp_path / "m" / "classifier"), "--port", "9100"]
    argv += [
        "--cpus",
        "2",
        "--memory",
        "1g",
        "--batching-parameters",
        str(batching),
        "--image",
        "tensorflow/serving:2.18.0",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out.strip()
    expected = ContainerSpec.create(
        tmp_path / "m" / "classifier",
        image="tensorflow/serving:2.18.0",
        host_port=9100,
        cpus=2.0,
        memory="1g",
        batching_parameters_file=batching,
    )
    assert printed == format_command(docker_run_command(expected))
    assert shlex.split(printed) == docker_run_command(expected)


def test_docker_missing_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model = fake_model(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert main(["docker", "up", "--model-base-path", str(model), "--port", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "docker is not installed" in err
    assert "apt-get install docker.io" in err
    for action in (["down"], ["logs"], ["build-standin"]):
        assert main(["docker", *action]) == 1
        assert "docker is not installed" in capsys.readouterr().err


def test_model_dir_without_numeric_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = tmp_path / "classifier"
    (base / "latest").mkdir(parents=True)
    (base / "latest" / "saved_model.pb").write_bytes(b"\n")
    with pytest.raises(ConfigError, match="no numeric version directory"):
        check_model_dir(base)
    assert main(["docker", "up", "--model-base-path", str(base)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "found: latest" in err


def test_model_dir_checks(tmp_path: Path) -> None:
    assert check_model_dir(fake_model(tmp_path, ("1", "7", "00012"))) == 12
    with pytest.raises(ConfigError, match="does not exist"):
        check_model_dir(tmp_path / "nope")
    empty_version = tmp_path / "other"
    (empty_version / "3").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"no saved_model\.pb"):
        check_model_dir(empty_version)


def test_port_in_use_is_detected() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(DockerError, match=f"port {port} on 127.0.0.1 is already in use"):
            check_port_free("127.0.0.1", port)
    check_port_free("127.0.0.1", port)  # free again once closed
    check_port_free("127.0.0.1", 0)


def test_bad_memory_and_name_are_argument_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--memory", "lots"], ["--name", "bad name"]):
        with pytest.raises(SystemExit) as exc:
            main(["docker", "up", "--dry-run", *argv])
        assert exc.value.code == 2
    assert "is not a memory size" in capsys.readouterr().err


# --- the stand-in's tensorflow_model_server -------------------------------------------------


def test_tf_flags_translate_to_serve_flags() -> None:
    options = flags.serve_options()
    argv = [
        "--port=8500",
        "--rest_api_port=8501",
        "--model_name=classifier",
        "--model_base_path=/models/classifier",
        "--enable_batching=true",
        "--batching_parameters_file=/etc/tfsbench/batching_parameters.txt",
        "--rest_api_enable_cors_support=false",
        "--tensorflow_intra_op_parallelism=2",
        "--enable_model_warmup",
    ]
    result = flags.translate(argv, options)
    assert result.serve_args == (
        "--port=8500",
        "--rest_api_port=8501",
        "--model_name=classifier",
        "--model_base_path=/models/classifier",
        "--enable_batching",
        "--batching_parameters_file=/etc/tfsbench/batching_parameters.txt",
    )
    assert result.ignored == ("--tensorflow_intra_op_parallelism=2", "--enable_model_warmup")
    container = entrypoint.container_serve_args(result, options)
    assert container[-1] == "--rest_api_host=0.0.0.0"
    # The translated arguments are valid `tfsbench serve` arguments.
    from bench.cli import build_parser

    parsed = build_parser().parse_args(["serve", *container])
    assert parsed.rest_api_port == 8501
    assert parsed.enable_batching is True
    assert parsed.rest_api_enable_cors_support is False


def test_later_flags_win_and_space_form_is_accepted() -> None:
    options = flags.serve_options()
    result = flags.translate(["--rest_api_port=8501", "--model_name", "a", "--rest_api_port=9000"], options)
    assert result.serve_args == ("--rest_api_port=9000", "--model_name=a")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--no_such_flag=1"], "unknown command line flag 'no_such_flag'"),
        (["--rest_api_port=eighty"], "invalid value 'eighty' for int flag --rest_api_port"),
        (["--enable_batching=maybe"], "invalid value 'maybe' for boolean flag --enable_batching"),
        (["positional"], "unexpected argument 'positional'"),
    ],
)
def test_bad_tf_flags_are_refused(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        flags.translate(argv, flags.serve_options())


def test_entrypoint_refuses_unknown_flag_like_tensorflow_model_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert entrypoint.main(["--bogus=1"]) == 1
    assert "unknown command line flag 'bogus'" in capsys.readouterr().err
    assert entrypoint.main(["--version"]) == 0
    assert "TensorFlow ModelServer" in capsys.readouterr().out


def test_init_forwards_sigterm_and_exits_cleanly() -> None:
    code = (
        "import sys; from bench.docker.entrypoint import run_child;"
        "sys.exit(run_child([sys.executable, '-c', 'import time; print(\"up\", flush=True); time.sleep(60)']))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "up"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert time.monotonic() - started < 30
    finally:
        if proc.poll() is None:
            proc.kill()


def test_init_passes_the_child_exit_code_on() -> None:
    code = (
        "import sys; from bench.docker.entrypoint import run_child;"
        "sys.exit(run_child([sys.executable, '-c', 'raise SystemExit(3)']))"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60, check=False).returncode == 3


@pytest.mark.skipif(shutil.which("apt-cache") is None, reason="apt-cache not available (not a Debian host)")
def test_debian_closure_follows_depends_and_honours_exclusions() -> None:
    from bench.docker.standin import PYTHON_TAG, debian_closure

    if not subprocess.run(["apt-cache", "policy", PYTHON_TAG], capture_output=True, text=True).stdout.strip():
        pytest.skip(f"apt does not know {PYTHON_TAG} here")
    packages = debian_closure([PYTHON_TAG], {"perl-base", "dpkg"})
    assert PYTHON_TAG in packages
    assert "libc6" in packages
    assert f"lib{PYTHON_TAG}-stdlib" in packages
    assert "perl-base" not in packages
    assert "dpkg" not in packages


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI on PATH")
def test_daemon_not_reachable_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-daemon.sock'}")
    assert main(["docker", "up", "--model-base-path", str(fake_model(tmp_path)), "--port", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "the Docker daemon is not reachable" in err
    assert "start it (dockerd" in err


def test_sweep_needs_host_or_docker_but_not_both(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "--batch-sizes", "1"]) == 2
    assert "--host URL is required (or --docker IMAGE" in capsys.readouterr().err
    assert main(["sweep", "--host", "http://127.0.0.1:1", "--docker", "tensorflow/serving"]) == 2
    assert "--host and --docker exclude each other" in capsys.readouterr().err
