"""`tfsbench serve` flags in tensorflow_model_server's syntax, over real HTTP on loopback:
booleans as ``--flag``/``--flag=true``/``--flag=false``; the config file re-read while serving."""

from __future__ import annotations

import http.client
import json
import logging
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from bench.cli import build_parser
from bench.errors import ConfigError
from bench.serving.server import EmbeddedServer, options_from_args
from tests.helpers.paths import REPO

M = "/v1/models/classifier"


def call(port: int, method: str, path: str, body: bytes = b"", timeout: float = 60) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body)
        reply = conn.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        conn.close()


def serve_args(model_base_path: Path, *flags: str):
    return build_parser().parse_args(
        [
            "serve",
            "--port=0",
            "--rest_api_port=0",
            "--model_name=classifier",
            f"--model_base_path={model_base_path}",
            *flags,
        ]
    )


@pytest.mark.parametrize(
    ("flags", "cors", "batching"),
    [
        ((), False, False),
        (("--rest_api_enable_cors_support", "--enable_batching"), True, True),
        (("--rest_api_enable_cors_support=true", "--enable_batching=True"), True, True),
        (("--rest_api_enable_cors_support=false", "--enable_batching=0"), False, False),
        # Later flags win, as with tensorflow_model_server.
        (("--enable_batching", "--enable_batching=false", "--rest_api_enable_cors_support=1"), True, False),
    ],
)
def test_boolean_flags_take_tensorflow_model_server_syntax(model_base_path, flags, cors, batching) -> None:
    options = options_from_args(serve_args(model_base_path, *flags))
    assert (options.cors, options.batching is not None) == (cors, batching)
    with EmbeddedServer(options=options) as server:
        status, headers, _ = call(server.port, "GET", M)
        assert status == 200
        assert ("access-control-allow-origin" in headers) == cors
        body = orjson.dumps({"instances": [[[[0, 0, 0]] * 128] * 128]})
        status, _, reply = call(server.port, "POST", M + ":predict", body)
        assert status == 200, reply
        assert len(json.loads(reply)["predictions"]) == 1
        # Batching runs go through the batching session, whose metrics only have samples then
        # (their families are always listed, as upstream's exporter lists every registered one).
        assert ("processed_batch_size_count" in server.metrics.render()) == batching


@pytest.mark.parametrize("flag", ["--enable_batching=maybe", "--rest_api_enable_cors_support=", "--enable_batching=2"])
def test_bad_boolean_value_is_one_line_and_exit_2(flag: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "serve", "--model_base_path=.", flag],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, done.stderr
    assert "invalid boolean value" in errors[0]
    assert "Traceback" not in done.stderr


# --- --model_config_file_poll_wait_seconds -----------------------------------------------------


def copy_version(src: Path, base: Path, version: int) -> None:
    tmp = base / f".tmp-{version}"
    shutil.copytree(src, tmp)
    tmp.rename(base / str(version))


def write_config(path: Path, *entries: str) -> None:
    """Replace the config file atomically: the poller never reads half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text("model_config_list {\n" + "\n".join(entries) + "\n}\n")
    tmp.replace(path)


def entry(name: str, base: Path, extra: str = "") -> str:
    return f'config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" {extra} }}'


def wait_for(check, what: str, timeout_s: float = 90.0):
    """Poll ``check()`` until it returns a truthy value; fail naming ``what`` after the deadline."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def states(port: int, name: str) -> list[tuple[str, str]]:
    status, _, body = call(port, "GET", f"/v1/models/{name}")
    if status != 200:
        return []
    return [(s["version"], s["state"]) for s in json.loads(body)["model_version_status"]]


def labelled_version(port: int, name: str, label: str) -> str | None:
    status, _, body = call(port, "GET", f"/v1/models/{name}/labels/{label}/metadata")
    return json.loads(body)["model_spec"]["version"] if status == 200 else None


PREDICT_ONE = orjson.dumps({"instances": [[[[0, 0, 0]] * 128] * 128]})


def test_config_file_is_reread_and_applied(tmp_path, model_base_path, caplog) -> None:
    two = tmp_path / "two"
    two.mkdir()
    for version in (1, 2):
        copy_version(model_base_path / "1", two, version)
    config = tmp_path / "models.config"
    pinned = "model_version_policy { specific { versions: 1 versions: 2 } }"
    write_config(config, entry("classifier", two, pinned))
    caplog.set_level(logging.INFO, logger="tfsbench.serve")
    args = build_parser().parse_args(
        [
            "serve",
            "--port=0",
            "--rest_api_port=0",
            f"--model_config_file={config}",
            "--model_config_file_poll_wait_seconds=1",
        ]
    )
    options = options_from_args(args)
    assert (options.config_file, options.config_poll_wait_s) == (config, 1.0)
    with EmbeddedServer(options=options) as server:
        port = server.port
        assert states(port, "classifier") == [("2", "AVAILABLE"), ("1", "AVAILABLE")]
        assert labelled_version(port, "classifier", "stable") is None
        assert call(port, "GET", "/v1/models/second")[0] == 404

        # A label on a loaded version and a second model, added while serving.
        labelled = pinned + " version_labels { key: 'stable' value: 2 }"
        write_config(config, entry("classifier", two, labelled), entry("second", model_base_path))
        wait_for(lambda: states(port, "second") == [("1", "AVAILABLE")], "the second model")
        assert wait_for(lambda: labelled_version(port, "classifier", "stable"), "the label") == "2"
        status, _, reply = call(port, "POST", "/v1/models/second:predict", PREDICT_ONE)
        assert status == 200, reply
        status, _, reply = call(port, "POST", M + "/labels/stable:predict", PREDICT_ONE)
        assert status == 200, reply

        # A config that does not parse is logged; the one in force stays.
        config.write_text("model_config_list { config { name: 'broken' ")
        wait_for(
            lambda: any("Failed to read ModelServerConfig file" in r.getMessage() for r in caplog.records),
            "the parse error in the log",
        )
        assert labelled_version(port, "classifier", "stable") == "2"
        assert states(port, "second") == [("1", "AVAILABLE")]

        # The second model removed and the first back to the default policy (latest only): the
        # removed model's versions end but stay listed; the label is gone with the config.
        write_config(config, entry("classifier", two))
        wait_for(lambda: states(port, "second") == [("1", "END")], "the second model to unload")
        wait_for(lambda: states(port, "classifier") == [("2", "AVAILABLE"), ("1", "END")], "version 1 to unload")
        status, _, reply = call(port, "POST", "/v1/models/second:predict", PREDICT_ONE)
        assert (status, json.loads(reply)) == (404, {"error": "Servable not found for request: Latest(second)"})
        status, _, reply = call(port, "GET", M + "/labels/stable/metadata")
        assert (status, json.loads(reply)) == (400, {"error": "Unrecognized servable version label: stable"})

        # Added back: its versions load again.
        write_config(config, entry("classifier", two), entry("second", model_base_path))
        wait_for(lambda: states(port, "second") == [("1", "AVAILABLE")], "the second model to come back")


def test_config_file_read_once_without_poll_flag(tmp_path, model_base_path) -> None:
    config = tmp_path / "models.config"
    write_config(config, entry("classifier", model_base_path))
    with EmbeddedServer(model_config_file=config, port=0, poll_wait_s=0) as server:
        assert server.options.config_poll_wait_s == 0
        write_config(config, entry("classifier", model_base_path), entry("second", model_base_path))
        # Read once: no config poller runs; applying by hand is the only way a change arrives.
        assert not [t for t in threading.enumerate() if t.name == "tfsbench-config-poll"]
        assert call(server.port, "GET", "/v1/models/second")[0] == 404
        assert server.store.poll_config_once() is True
        assert states(server.port, "second") == [("1", "AVAILABLE")]


# --- --allow_version_labels_for_unavailable_models ---------------------------------------------

NOT_AVAILABLE = (
    "FAILED_PRECONDITION: Request to assign label to version {v} of model {m}, "
    "which is not currently available for inference"
)


def test_labels_at_start_up_need_the_flag(tmp_path, model_base_path) -> None:
    config = tmp_path / "models.config"
    write_config(config, entry("classifier", model_base_path, "version_labels { key: 'stable' value: 1 }"))
    # tensorflow/serving checks labels before loading anything: even version 1, which exists, fails.
    done = subprocess.run(
        [sys.executable, "-m", "bench", "serve", "--port=0", "--rest_api_port=0", f"--model_config_file={config}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert NOT_AVAILABLE.format(v=1, m="classifier") in lines[0]
    assert "--allow_version_labels_for_unavailable_models" in lines[0]
    with pytest.raises(ConfigError, match=NOT_AVAILABLE.format(v=1, m="classifier")):
        EmbeddedServer(model_config_file=config, port=0)


def test_flag_lets_a_label_name_a_version_still_to_load(tmp_path, model_base_path) -> None:
    base = tmp_path / "classifier"
    base.mkdir()
    copy_version(model_base_path / "1", base, 1)
    config = tmp_path / "models.config"
    labels = "model_version_policy { all {} } version_labels { key: 'stable' value: 1 } "
    write_config(config, entry("classifier", base, labels + "version_labels { key: 'canary' value: 3 }"))
    args = build_parser().parse_args(
        [
            "serve",
            "--port=0",
            "--rest_api_port=0",
            f"--model_config_file={config}",
            "--file_system_poll_wait_seconds=1",
            "--allow_version_labels_for_unavailable_models=true",
        ]
    )
    with EmbeddedServer(options=options_from_args(args)) as server:
        port = server.port
        assert labelled_version(port, "classifier", "stable") == "1"
        # The label is known, its version is not loaded: the lookup's NOT_FOUND, not a label error.
        status, _, reply = call(port, "POST", M + "/labels/canary:predict", PREDICT_ONE)
        assert (status, json.loads(reply)) == (
            404,
            {"error": "Servable not found for request: Specific(classifier, 3)"},
        )
        copy_version(model_base_path / "1", base, 3)
        assert wait_for(lambda: labelled_version(port, "classifier", "canary"), "version 3 to load") == "3"
        status, _, reply = call(port, "POST", M + "/labels/canary:predict", PREDICT_ONE)
        assert status == 200, reply


def test_reload_rejects_labels_on_unavailable_versions_and_keeps_the_config(tmp_path, model_base_path, caplog) -> None:
    base = tmp_path / "classifier"
    base.mkdir()
    for version in (1, 2):
        copy_version(model_base_path / "1", base, version)
    config = tmp_path / "models.config"
    only_1 = "model_version_policy { specific { versions: 1 } }"
    both = "model_version_policy { specific { versions: 1 versions: 2 } }"
    write_config(config, entry("classifier", base, only_1))
    caplog.set_level(logging.INFO, logger="tfsbench.serve")
    with EmbeddedServer(model_config_file=config, port=0, poll_wait_s=0, config_poll_wait_s=0.2) as server:
        port = server.port
        # Loading version 2 and labelling it in one change: refused, nothing of it applied.
        write_config(config, entry("classifier", base, both + " version_labels { key: 'canary' value: 2 }"))
        refused = "PollFilesystemAndReloadConfig failed to ReloadConfig: " + NOT_AVAILABLE.format(v=2, m="classifier")
        wait_for(lambda: any(r.getMessage() == refused for r in caplog.records), "the refusal in the log")
        assert states(port, "classifier") == [("1", "AVAILABLE")]
        assert labelled_version(port, "classifier", "canary") is None
        # In two steps it works: load version 2, then label it.
        write_config(config, entry("classifier", base, both))
        wait_for(lambda: states(port, "classifier") == [("2", "AVAILABLE"), ("1", "AVAILABLE")], "version 2")
        write_config(config, entry("classifier", base, both + " version_labels { key: 'canary' value: 2 }"))
        assert wait_for(lambda: labelled_version(port, "classifier", "canary"), "the label") == "2"


def test_flag_does_not_let_a_label_move_to_an_unavailable_version(tmp_path, model_base_path, caplog) -> None:
    config = tmp_path / "models.config"
    write_config(config, entry("classifier", model_base_path, "version_labels { key: 'stable' value: 1 }"))
    caplog.set_level(logging.INFO, logger="tfsbench.serve")
    with EmbeddedServer(
        model_config_file=config, port=0, poll_wait_s=0, config_poll_wait_s=0.2, allow_unavailable_labels=True
    ) as server:
        port = server.port
        assert labelled_version(port, "classifier", "stable") == "1"
        write_config(config, entry("classifier", model_base_path, "version_labels { key: 'stable' value: 5 }"))
        refused = "PollFilesystemAndReloadConfig failed to ReloadConfig: " + NOT_AVAILABLE.format(v=5, m="classifier")
        wait_for(lambda: any(r.getMessage() == refused for r in caplog.records), "the refusal in the log")
        assert labelled_version(port, "classifier", "stable") == "1"
        # A new label may name a missing version: only moving an existing one needs availability.
        write_config(
            config,
            entry(
                "classifier",
                model_base_path,
                "version_labels { key: 'stable' value: 1 } version_labels { key: 'next' value: 5 }",
            ),
        )
        wait_for(lambda: call(port, "GET", M + "/labels/next/metadata")[0] == 404, "the new label")
        status, _, reply = call(port, "GET", M + "/labels/next/metadata")
        assert (status, json.loads(reply)) == (
            404,
            {"error": "Servable not found for request: Specific(classifier, 5)"},
        )
