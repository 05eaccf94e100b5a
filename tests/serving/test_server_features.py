"""Embedded server behaviour beyond single-request conformance: in-process equality, fuzzing,
batching, version polling, config files with labels, limits, metrics, CORS, SIGTERM drain."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, cast

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.api_names import RUNTIME_LATENCY
from bench.serving.batching import BatchingParameters
from bench.serving.model_config import ModelConfig
from bench.serving.server import EmbeddedServer, ServerOptions
from tests.helpers.paths import REPO

M = "/v1/models/classifier"


def call(port: int, method: str, path: str, body: bytes = b"", headers: dict | None = None, timeout: float = 60):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        reply = conn.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        conn.close()


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 128, 128, 3), dtype=np.uint8)


def copy_version(src: Path, base: Path, version: int) -> None:
    """Add a version directory atomically (what a model export does), as a poll would see it."""
    tmp = base / f".tmp-{version}"
    shutil.copytree(src, tmp)
    tmp.rename(base / str(version))


def test_http_predictions_equal_in_process_predictions(embedded_server, model_base_path) -> None:
    import tensorflow as tf

    batch = images(5, 11)
    model = tf.saved_model.load(str(model_base_path / "1"))
    expected = {k: v.numpy() for k, v in model.signatures["serving_default"](examples=tf.constant(batch)).items()}
    for key in ("instances", "inputs"):
        status, _, body = call(embedded_server.port, "POST", M + ":predict", orjson.dumps({key: batch.tolist()}))
        assert status == 200
        doc = json.loads(body)
        if key == "instances":
            probabilities = np.array([row["probabilities"] for row in doc["predictions"]], np.float32)
            classes = [row["classes"] for row in doc["predictions"]]
        else:
            probabilities = np.array(doc["outputs"]["probabilities"], np.float32)
            classes = doc["outputs"]["classes"]
        # 9 significant digits round-trip a float32 exactly.
        np.testing.assert_array_equal(probabilities, expected["probabilities"])
        assert classes == expected["classes"].tolist()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-300, 3_000_000_000) | st.floats() | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["instances", "inputs", "signature_name", "examples", "b64", "x"]), inner, max_size=3
        )
    ),
    max_leaves=20,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    value=JSON_VALUES,
    wrap=st.sampled_from(["instances", "inputs", "examples", None]),
    signature=st.sampled_from([None, "serving_bytes", 3]),
    path=st.sampled_from([M + ":predict", M + ":classify", M + "/versions/1:predict", M + "/labels/x:regress"]),
    junk=st.binary(max_size=6),
    cut=st.integers(0, 40),
)
def test_fuzzed_bodies_get_json_4xx_and_the_server_stays_up(embedded_server, value, wrap, signature, path, junk, cut):
    doc = value if wrap is None else {wrap: value}
    if signature is not None and isinstance(doc, dict):
        doc["signature_name"] = signature
    body = orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS) if not isinstance(doc, float) else b"1"
    if cut:
        body = body[: len(body) - cut % (len(body) + 1)] + junk
    status, headers, reply = call(embedded_server.port, "POST", path, body)
    assert status in (200, 400, 404), reply
    assert headers["content-type"] == "application/json"
    if status != 200:
        assert set(json.loads(reply)) == {"error"}
    assert call(embedded_server.port, "GET", M)[0] == 200


@pytest.fixture(scope="module")
def batching_server(model_base_path):
    options = ServerOptions(
        models=(ModelConfig("classifier", model_base_path),),
        port=0,
        num_threads=64,
        batching=BatchingParameters(max_batch_size=32, batch_timeout_micros=200_000, num_batch_threads=1),
        prometheus_path="/monitoring/prometheus/metrics",
    )
    with EmbeddedServer(options=options) as server:
        yield server


def test_batching_merges_concurrent_requests_and_splits_answers(batching_server, embedded_server) -> None:
    batch = images(32, 5)
    bodies = [orjson.dumps({"instances": [im.tolist()]}) for im in batch]
    expected = json.loads(
        call(embedded_server.port, "POST", M + ":predict", orjson.dumps({"instances": batch.tolist()}))[2]
    )
    answers: list = [None] * 32

    def one(i: int) -> None:
        answers[i] = call(batching_server.port, "POST", M + ":predict", bodies[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for i, (status, _, body) in enumerate(answers):
        assert status == 200
        got = json.loads(body)["predictions"][0]
        assert got["classes"] == expected["predictions"][i]["classes"]
        np.testing.assert_allclose(got["probabilities"], expected["predictions"][i]["probabilities"], rtol=1e-5)
    status, headers, text = call(batching_server.port, "GET", "/monitoring/prometheus/metrics")
    assert status == 200
    assert headers["content-type"] == "text/plain"
    metrics = text.decode()
    runs = float(
        cast(
            "re.Match[str]",
            re.search(r"^:tensorflow:serving:batching_session:processed_batch_size_count (\S+)$", metrics, re.M),
        )[1]
    )
    images_run = float(
        cast(
            "re.Match[str]",
            re.search(r"^:tensorflow:serving:batching_session:processed_batch_size_sum (\S+)$", metrics, re.M),
        )[1]
    )
    assert images_run >= 32
    assert runs < images_run  # at least one model call served several requests
    assert ':tensorflow:serving:request_count{model_name="classifier",status="OK"}' in metrics
    assert ":tensorflow:serving:request_latency_bucket{" in metrics
    too_big = orjson.dumps({"instances": images(33, 1).tolist()})
    status, _, body = call(batching_server.port, "POST", M + ":predict", too_big)
    assert (status, json.loads(body)) == (400, {"error": "Task size 33 is larger than maximum input batch size 32"})


def test_config_file_labels_and_version_polling(tmp_path, model_base_path) -> None:
    two = tmp_path / "two"
    two.mkdir()
    copy_version(model_base_path / "1", two, 1)
    copy_version(model_base_path / "1", two, 2)
    polled = tmp_path / "polled"
    polled.mkdir()
    copy_version(model_base_path / "1", polled, 1)
    config = tmp_path / "models.config"
    config.write_text(
        f"""
        # two models; the first serves two pinned versions with labels
        model_config_list {{
          config {{
            name: 'classifier'
            base_path: '{two}'
            model_platform: 'tensorflow'
            model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
            version_labels {{ key: 'stable' value: 1 }}
            version_labels {{ key: 'canary' value: 2 }}
          }}
          config {{ name: "polled" base_path: "{polled}" model_platform: "tensorflow" }}
        }}
        """
    )
    # Labels are checked before any version loads (tensorflow/serving): at start-up they need the flag.
    with EmbeddedServer(model_config_file=config, port=0, poll_wait_s=0.2, allow_unavailable_labels=True) as server:
        status = json.loads(call(server.port, "GET", M)[2])["model_version_status"]
        assert [(s["version"], s["state"]) for s in status] == [("2", "AVAILABLE"), ("1", "AVAILABLE")]
        body = orjson.dumps({"instances": images(1, 3).tolist()})
        by_label = {
            label: json.loads(call(server.port, "POST", f"{M}/labels/{label}:predict", body)[2])
            for label in ("stable", "canary")
        }
        assert by_label["stable"] == by_label["canary"]  # same weights, different versions
        meta = json.loads(call(server.port, "GET", f"{M}/labels/canary/metadata")[2])
        assert meta["model_spec"]["version"] == "2"
        status, _, reply = call(server.port, "GET", f"{M}/labels/beta/metadata")
        assert (status, json.loads(reply)) == (400, {"error": "Unrecognized servable version label: beta"})
        assert call(server.port, "GET", "/v1/models/polled/versions/1")[0] == 200

        copy_version(model_base_path / "1", polled, 7)
        deadline = time.monotonic() + 60
        states: list = []
        while time.monotonic() < deadline:
            states = [
                (s["version"], s["state"])
                for s in json.loads(call(server.port, "GET", "/v1/models/polled")[2])["model_version_status"]
            ]
            if states == [("7", "AVAILABLE"), ("1", "END")]:
                break
            time.sleep(0.2)
        assert states == [("7", "AVAILABLE"), ("1", "END")]
        meta = json.loads(call(server.port, "GET", "/v1/models/polled/metadata")[2])
        assert meta["model_spec"]["version"] == "7"
        status, _, reply = call(server.port, "POST", "/v1/models/polled/versions/1:predict", body)
        assert (status, json.loads(reply)) == (404, {"error": "Servable not found for request: Specific(polled, 1)"})


def test_runtime_latency_counts_each_successful_predict(model_base_path) -> None:
    from bench.target.prometheus import histogram_delta, parse_exposition, server_stats

    options = ServerOptions(
        models=(ModelConfig("classifier", model_base_path),), port=0, prometheus_path="/monitoring/prometheus/metrics"
    )
    with EmbeddedServer(options=options) as server:

        def scrape() -> dict:
            status, _, text = call(server.port, "GET", cast(str, options.prometheus_path))
            assert status == 200
            return parse_exposition(text.decode())

        before = scrape()
        for i, n in enumerate((1, 4, 16, 2, 8)):
            status, _, body = call(
                server.port, "POST", M + ":predict", orjson.dumps({"instances": images(n, i).tolist()})
            )
            assert status == 200, body
        bad = orjson.dumps({"instances": np.zeros((1, 4, 4, 4), np.uint8).tolist()})
        assert call(server.port, "POST", M + ":predict", bad)[0] == 400  # the run fails: not counted
        after = scrape()
    labels = {lab for (name, lab) in after if name == RUNTIME_LATENCY + "_count"}
    assert labels == {(("API", "Predict"), ("model_name", "classifier"), ("runtime", "TF1"))}
    runtime = histogram_delta(before, after, RUNTIME_LATENCY, model_name="classifier", API="Predict")
    assert runtime is not None
    assert runtime.count == 5
    assert runtime.buckets[-1] == (float("inf"), 5)
    stats = server_stats(before, after, model_name="classifier")
    assert stats["requests"] == 5
    # The model run is part of the request: its mean can only be smaller.
    assert 0 < stats["runtime_mean_ms"] < stats["latency_mean_ms"]


def test_limits_timeout_cors_and_metrics_path(model_base_path) -> None:
    options = ServerOptions(
        models=(ModelConfig("classifier", model_base_path),),
        port=0,
        timeout_ms=1,
        max_body_bytes=4_000_000,
        cors=True,
        prometheus_path="/metrics",
    )
    with EmbeddedServer(options=options) as server:
        status, headers, body = call(server.port, "GET", M)
        assert status == 200
        assert headers["access-control-allow-origin"] == "*"
        assert headers["access-control-allow-methods"] == "POST, GET"
        big = orjson.dumps({"instances": images(64, 0).tolist()})
        status, _, body = call(server.port, "POST", M + ":predict", big)
        assert status == 413
        assert "exceeds" in json.loads(body)["error"]
        bomb = gzip.compress(b" " * 5_000_000 + b"{}")
        status, _, body = call(server.port, "POST", M + ":predict", bomb, {"Content-Encoding": "gzip"})
        # Inflated past the body limit: 413 (counted inside the processing slot), not an empty body.
        assert status == 413
        assert "Inflated request body of more than 4000000 bytes exceeds" in json.loads(body)["error"]
        # A body that does not inflate becomes empty, as in tensorflow/serving.
        status, _, body = call(server.port, "POST", M + ":predict", b"not gzip", {"Content-Encoding": "gzip"})
        assert (status, json.loads(body)) == (400, {"error": "JSON Parse error: The document is empty"})
        # A 1 ms deadline cannot fit a 16-image model run: DEADLINE_EXCEEDED -> 504.
        zeros = orjson.dumps({"instances": np.zeros((16, 128, 128, 3), np.uint8).tolist()})
        status, _, body = call(server.port, "POST", M + ":predict", zeros)
        assert status == 504
        assert json.loads(body)["error"]
        status, _, text = call(server.port, "GET", "/metrics")
        assert status == 200
        # The deadline answered first: tensorflow/serving records no runtime for a failed run.
        assert b":tensorflow:serving:runtime_latency_count" not in text
        status, _, text = call(server.port, "GET", "/metrics?x=1")
        assert (status, text) == (400, b"Unexpected path: /metrics?x=1. Should be /metrics")
        assert call(server.port, "GET", M)[0] == 200


def test_serve_cli_rejects_bad_flags_with_one_line(tmp_path) -> None:
    for args in (["--bogus"], ["--model_base_path", str(tmp_path / "missing")], ["--rest_api_port", "x"]):
        done = subprocess.run(
            [sys.executable, "-m", "bench", "serve", *args], capture_output=True, text=True, timeout=120, cwd=REPO
        )
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr


def test_sigterm_drains_in_flight_requests_and_exits_0(model_base_path) -> None:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "bench", "serve", "--port", "0", "--rest_api_port", "0",
            "--model_name", "classifier", "--model_base_path", str(model_base_path),
        ],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO, env=env,
    )  # fmt: skip
    try:
        line = ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "listening on" not in line:
            line = cast(IO[str], proc.stdout).readline()  # stdout=PIPE: never None
            assert line or proc.poll() is None
        port = int(line.strip().rsplit(":", 1)[1])
        body = orjson.dumps({"instances": images(32, 2).tolist()})
        conns = []
        for _ in range(3):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            conn.request("GET", M)  # an accepted keep-alive connection ...
            conn.getresponse().read()
            conn.request("POST", M + ":predict", body=body)  # ... with a request in flight
            conns.append(conn)
        proc.send_signal(signal.SIGTERM)
        statuses = []
        for conn in conns:
            reply = conn.getresponse()
            statuses.append(reply.status)
            assert len(json.loads(reply.read())["predictions"]) == 32
            conn.close()
        assert statuses == [200, 200, 200]
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
