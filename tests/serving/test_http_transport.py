"""Transport details of the embedded server that decide latency but not correctness: a reply
goes out as one segment on a TCP_NODELAY socket, so keep-alive clients never wait for a
delayed ACK (which put a ~40 ms floor under every batch-1 request)."""

from __future__ import annotations

import socket

import numpy as np
import orjson


def _request(port: int, body: bytes) -> bytes:
    return (
        f"POST /v1/models/classifier:predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _server_side_socket(server, client: socket.socket) -> socket.socket:
    peer = client.getsockname()
    for sock in server.http.server_sockets():
        try:
            if sock.getpeername()[:2] == peer[:2]:
                return sock
        except OSError:
            continue
    raise AssertionError(f"no server connection for client {peer}")


def test_accepted_connections_have_tcp_nodelay(embedded_server) -> None:
    with socket.create_connection(("127.0.0.1", embedded_server.port), timeout=30) as client:
        client.sendall(b"GET /v1/models/classifier HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.recv(65536).startswith(b"HTTP/1.1 200")
        accepted = _server_side_socket(embedded_server, client)
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_keep_alive_reply_arrives_in_one_segment(embedded_server) -> None:
    # The client leaves Nagle on and never sends again before reading: if the server wrote the
    # headers and the body in two small sends, the body would sit in the server's buffer until
    # our delayed ACK, and the first recv() would hold the headers only.
    image = np.random.default_rng(3).integers(0, 256, (1, 128, 128, 3), dtype=np.uint8)
    body = orjson.dumps({"instances": image}, option=orjson.OPT_SERIALIZE_NUMPY)
    with socket.create_connection(("127.0.0.1", embedded_server.port), timeout=30) as client:
        for _ in range(3):  # keep-alive: every reply on the same connection
            client.sendall(_request(embedded_server.port, body))
            data = client.recv(1 << 20)
            head, sep, payload = data.partition(b"\r\n\r\n")
            assert sep, data[:200]
            assert head.startswith(b"HTTP/1.1 200"), data[:200]
            lines = head.split(b"\r\n")
            length = next(int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length"))
            assert len(payload) == length, (len(payload), length)
            assert b"predictions" in payload
