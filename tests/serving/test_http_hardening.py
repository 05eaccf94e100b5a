"""The HTTP front end against clients that break the protocol, send slowly, or hold connections:
every probe gets a clean 4xx/5xx or a closed connection, and the server keeps serving."""

from __future__ import annotations

import http.client
import json
import select
import signal
import socket
import time

import numpy as np
import orjson
import pytest

from bench.serving.server import EmbeddedServer
from tests.helpers.serve_process import ServeProcess

M = "/v1/models/classifier"
LIMIT = 200_000
PREDICT = "POST /v1/models/classifier:predict HTTP/1.1\r\nHost: x\r\n"


@pytest.fixture(scope="module")
def guarded(model_base_path):
    """A server with a small body limit and short header/idle timeouts."""
    with EmbeddedServer(
        model_base_path=model_base_path,
        model_name="classifier",
        max_body_bytes=LIMIT,
        header_timeout_s=1.0,
        idle_timeout_s=2.0,
    ) as server:
        yield server


def exchange(port: int, data: bytes, timeout_s: float = 30) -> bytes:
    """Send ``data``; everything the server answers until it closes (or ``timeout_s`` passes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(data)
        return read_until_closed(sock)


def read_until_closed(sock: socket.socket) -> bytes:
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return out


def readable(sock: socket.socket, timeout_s: float) -> bool:
    poller = select.poll()  # not select(): descriptors past 1024 in the many-connections test
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(timeout_s * 1000))


def status_of(reply: bytes) -> int:
    assert reply.startswith(b"HTTP/1."), reply[:200]
    return int(reply.split(b" ", 2)[1])


def still_serving(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", M)
    assert conn.getresponse().status == 200
    conn.close()


@pytest.mark.parametrize("size", ["-1", "0x5", "+5", "1_0", " 5", "5 5", "ffffffffffffffffffff"])
def test_malformed_chunk_sizes_get_400(guarded, size) -> None:
    reply = exchange(guarded.port, f"{PREDICT}Transfer-Encoding: chunked\r\n\r\n{size}\r\nabcde\r\n0\r\n\r\n".encode())
    assert status_of(reply) == 400
    still_serving(guarded.port)


@pytest.mark.parametrize(
    ("head", "status"),
    [
        pytest.param("Transfer-Encoding: xchunked\r\n", 400, id="xchunked"),
        pytest.param("Transfer-Encoding: identity, chunked\r\n", 501, id="identity-chunked"),
        pytest.param("Transfer-Encoding: gzip, chunked\r\n", 501, id="gzip-chunked"),
        pytest.param("Content-Length: 2\r\nContent-Length: 3\r\n", 400, id="two-content-lengths"),
        pytest.param("Content-Length: 2\r\nTransfer-Encoding: chunked\r\n", 400, id="length-and-chunked"),
        pytest.param("Content-Length: -2\r\n", 400, id="negative-length"),
    ],
)
def test_ambiguous_framing_is_refused(guarded, head, status) -> None:
    reply = exchange(guarded.port, f"{PREDICT}{head}\r\n2\r\n{{}}\r\n0\r\n\r\n".encode())
    assert status_of(reply) == status
    still_serving(guarded.port)


def test_chunked_on_http_1_0_is_refused(guarded) -> None:
    request = PREDICT.replace("HTTP/1.1", "HTTP/1.0") + "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    reply = exchange(guarded.port, request.encode())
    assert status_of(reply) == 400
    assert b"HTTP/1.0" in json.loads(reply.partition(b"\r\n\r\n")[2])["error"].encode()


def test_trailers_are_bounded(guarded) -> None:
    trailers = "".join(f"X-Trailer-{i}: {'v' * 100}\r\n" for i in range(5000))
    reply = exchange(
        guarded.port, f"{PREDICT}Transfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n{trailers}\r\n".encode()
    )
    assert status_of(reply) == 400
    still_serving(guarded.port)


def test_a_chunked_body_gets_413_as_soon_as_it_passes_the_limit(guarded) -> None:
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=30) as sock:
        sock.sendall(f"{PREDICT}Transfer-Encoding: chunked\r\n\r\n".encode())
        chunk = b"%x\r\n" % 65536 + b" " * 65536 + b"\r\n"
        answered = False
        for _ in range(64):  # up to 20x the limit, but never the final chunk
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            if readable(sock, 0):
                answered = True
                break
        assert answered or readable(sock, 30), "no reply to an endless chunked body"
        reply = read_until_closed(sock)
    assert status_of(reply) == 413
    assert b"exceeds the server limit of 200000 bytes" in reply


def test_declared_length_over_the_limit_gets_413_before_the_body(guarded) -> None:
    reply = exchange(guarded.port, f"{PREDICT}Content-Length: {LIMIT + 1}\r\n\r\n".encode())
    assert status_of(reply) == 413
    assert b"Connection: close" in reply


def test_expect_100_continue(guarded) -> None:
    over = exchange(guarded.port, f"{PREDICT}Content-Length: {LIMIT * 10}\r\nExpect: 100-continue\r\n\r\n".encode())
    assert status_of(over) == 413  # not "100 Continue": the client must not send the body
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=30) as sock:
        sock.sendall(f"{PREDICT}Content-Length: 2\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n".encode())
        interim = sock.recv(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"{}")
        final = read_until_closed(sock)
    assert status_of(final) == 400  # the REST API's answer to "{}"
    assert b"Missing 'inputs' or 'instances' key" in final


def test_a_slow_request_head_is_cut_off(guarded) -> None:
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=30) as sock:
        sock.sendall(b"GET /v1/models/classifier HTTP/1.1\r\nHost: x\r\n")  # never ends the head
        assert read_until_closed(sock) == b""  # closed by the header timeout, before our 30 s
    still_serving(guarded.port)


def test_an_idle_keep_alive_connection_is_closed(guarded) -> None:
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=30) as sock:
        sock.sendall(b"GET /v1/models/classifier HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = read_until_closed(sock)  # the reply, then the close once idle for 2 s
    assert status_of(reply) == 200
    assert reply.count(b"HTTP/1.1") == 1


def test_a_declared_512_mb_body_that_never_arrives_commits_no_memory(model_base_path, tmp_path) -> None:
    with ServeProcess(model_base_path, log_path=tmp_path / "serve.log") as served:
        still_serving(served.port)
        before = served.rss_bytes()
        socks = [socket.create_connection(("127.0.0.1", served.port), timeout=30) for _ in range(4)]
        for sock in socks:  # within the default limit: the server waits for the body
            sock.sendall(f"{PREDICT}Content-Length: {512 * 1024 * 1024}\r\n\r\n".encode() + b"{" * 1000)
        still_serving(served.port)  # all four heads are parsed by now (one event loop, in order)
        grown = served.rss_bytes() - before
        assert grown < 64 * 1024 * 1024, f"RSS grew by {grown / 1e6:.0f} MB for bodies that never came"
        for sock in socks:
            sock.close()
        still_serving(served.port)


def test_connections_past_the_cap_get_503_and_threads_stay_flat(model_base_path, tmp_path) -> None:
    cap = 100
    with ServeProcess(model_base_path, f"--rest_api_max_connections={cap}", log_path=tmp_path / "serve.log") as served:
        still_serving(served.port)
        threads_before = served.threads()
        held: list[socket.socket] = []
        try:
            held.extend(socket.create_connection(("127.0.0.1", served.port), timeout=30) for _ in range(2000))
            time.sleep(0.5)  # let the server accept what it will: refusals are answered at accept
            silent = refused = 0
            for sock in held:
                if not readable(sock, 0):
                    silent += 1  # held open by the server, waiting for a request
                    continue
                reply = read_until_closed(sock)
                # 503 from the server, or reset by the kernel when the accept queue overflowed
                assert reply == b"" or status_of(reply) == 503, reply[:200]
                refused += reply != b""
            assert silent <= cap
            assert refused > 0
            assert served.threads() <= threads_before + 2, "a thread per connection?"
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + 30
        while True:  # the held connections' close reaches the server soon, then it serves again
            try:
                still_serving(served.port)
                break
            except (AssertionError, OSError):
                assert time.monotonic() < deadline
                time.sleep(0.1)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_with_many_idle_connections_drains_and_exits_0(model_base_path, tmp_path, signum) -> None:
    with ServeProcess(model_base_path, log_path=tmp_path / "serve.log") as served:
        idle = []
        for _ in range(25):  # keep-alive connections that sent one request and wait
            sock = socket.create_connection(("127.0.0.1", served.port), timeout=60)
            sock.sendall(b"GET /v1/models/classifier HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            idle.append(sock)
        body = orjson.dumps({"instances": np.zeros((32, 128, 128, 3), np.uint8).tolist()})
        busy = http.client.HTTPConnection("127.0.0.1", served.port, timeout=120)
        busy.request("POST", M + ":predict", body=body)
        served.proc.send_signal(signum)
        reply = busy.getresponse()
        assert reply.status == 200
        assert len(json.loads(reply.read())["predictions"]) == 32
        assert served.proc.wait(timeout=60) == 0
        for sock in idle:
            assert read_until_closed(sock) == b""  # closed, not left hanging
            sock.close()
        assert "Traceback" not in served.log()
