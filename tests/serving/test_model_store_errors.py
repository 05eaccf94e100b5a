"""The version poller under lost resources: a listing that fails (EMFILE, a vanished base path)
says nothing about which versions exist, so the server keeps serving what it has; a version
goes only once a listing that succeeds no longer holds it (as tensorflow/serving)."""

from __future__ import annotations

import http.client
import json
import logging
import os
import resource
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from bench.serving.model_store import scan_versions
from bench.serving.server import EmbeddedServer
from tests.helpers.serve_process import ServeProcess

M = "/v1/models/classifier"
BODY = orjson.dumps({"instances": np.zeros((1, 128, 128, 3), np.uint8).tolist()})


def _predict(conn: http.client.HTTPConnection) -> tuple[int, bytes]:
    conn.request("POST", M + ":predict", body=BODY)
    reply = conn.getresponse()
    return reply.status, reply.read()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _wait(predicate, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_scan_of_a_missing_base_path_raises_instead_of_finding_nothing(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        scan_versions(tmp_path / "missing")


def test_out_of_descriptors_keeps_the_model_loaded(model_base_path, tmp_path) -> None:
    with ServeProcess(model_base_path, "--file_system_poll_wait_seconds=1", log_path=tmp_path / "serve.log") as served:
        conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)  # opened before the limit
        assert _predict(conn)[0] == 200
        open_now = sum(1 for _ in Path(f"/proc/{served.proc.pid}/fd").iterdir())
        soft, hard = resource.prlimit(served.proc.pid, resource.RLIMIT_NOFILE)
        # Every further open() in the server fails with EMFILE, the poller's directory listing too.
        resource.prlimit(served.proc.pid, resource.RLIMIT_NOFILE, (open_now, hard))
        try:
            served.wait_for_log("Could not list base path of servable classifier")
            served.wait_for_log("Too many open files")
            # A connection the server cannot accept now: no busy loop over the failing accept().
            waiting = socket.create_connection(("127.0.0.1", served.port), timeout=60)
            cpu_before = _cpu_seconds(served.proc.pid)
            time.sleep(3)
            assert _cpu_seconds(served.proc.pid) - cpu_before < 1.5, "spinning on accept()"
            status, body = _predict(conn)
            assert status == 200, body
            conn.request("GET", M)
            states = json.loads(conn.getresponse().read())["model_version_status"]
            assert [(s["version"], s["state"]) for s in states] == [("1", "AVAILABLE")]
        finally:
            resource.prlimit(served.proc.pid, resource.RLIMIT_NOFILE, (soft, hard))
        served.wait_for_log("Base path of servable classifier is readable again")
        fresh = http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)
        assert _predict(fresh)[0] == 200
        assert "Unloaded servable" not in served.log()
        assert "Traceback" not in served.log()
        conn.close()
        fresh.close()
        waiting.close()


def test_a_vanished_base_path_keeps_serving_and_a_removed_version_unloads(model_base_path, tmp_path, caplog) -> None:
    base = tmp_path / "classifier"
    shutil.copytree(model_base_path / "1", base / "1")
    with caplog.at_level(logging.INFO, logger="tfsbench.serve"):
        with EmbeddedServer(model_base_path=base, model_name="classifier", poll_wait_s=0.05) as server:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            base.rename(tmp_path / "away")
            _wait(lambda: "Could not list base path" in caplog.text, "the failed listing to be logged")
            assert _predict(conn)[0] == 200
            (tmp_path / "away").rename(base)
            _wait(lambda: "readable again" in caplog.text, "the listing to recover")
            assert _predict(conn)[0] == 200
            # A listing that succeeds without the version: it is really gone, and unloads.
            (base / "1").rename(tmp_path / "v1-elsewhere")
            _wait(lambda: "Unloaded servable version" in caplog.text, "version 1 to unload")
            status, body = _predict(conn)
            assert status == 404, body
            assert "Servable not found" in json.loads(body)["error"]
            conn.close()
