"""`tfsbench serve` flags in tensorflow_model_server's syntax, over real HTTP on loopback:
booleans as ``--flag``/``--flag=true``/``--flag=false``."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from bench.cli import build_parser
from bench.server import EmbeddedServer, options_from_args

M = "/v1/models/classifier"
REPO = Path(__file__).resolve().parents[1]


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
        ["serve", "--rest_api_port=0", "--model_name=classifier", f"--model_base_path={model_base_path}", *flags]
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
        # Batching runs go through the batching session, whose metrics only exist then.
        assert ("processed_batch_size" in server.metrics.render()) == batching


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
