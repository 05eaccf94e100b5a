"""Soak benchmark of the embedded server: mixed valid and malformed traffic, RSS and threads sampled.

``python -m bench.perf.soak [--duration 10m] [--clients 4] [--max-body-bytes 8388608]`` starts
``tfsbench serve`` on loopback (its own process), then ``--clients`` threads send, round robin,
valid predicts (batch 1 and 8, row JSON; a PNG through ``serving_bytes``) and the probes the
server must shrug off: bad JSON, lists nested 5,000 deep, a 5,000-digit number, a declared body
over the limit, a gzip bomb, malformed and oversized chunked bodies, a 20000x20000 PNG, a half
sent head, a client gone mid-body, an idle connection. Every request has a timeout; the run
stops at ``--duration`` or ``--max-requests``.

It prints the server's RSS and thread count (start after a warm-up round, end, max), the
requests of each kind with their outcomes, and exits 1 if a kind got an unexpected outcome, the
server stopped serving, or RSS/threads passed their bounds: RSS may grow by
``3 x max_body_bytes x clients`` (a raw body, its inflated copy and decode temporaries per
request in flight) plus 128 MB of allocator slack; threads by twice the pool size (the REST
pool and the predict core's model-run pool, both ``--rest_api_num_threads`` and started on
demand).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import http.client
import io
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
from PIL import Image

from bench import argtypes
from export import export_model

MODEL = "classifier"
PREDICT = f"/v1/models/{MODEL}:predict"
TIMEOUT_S = 30.0
SLACK_BYTES = 128 << 20

Outcome = str  # "200", "413", "closed", ...


@dataclass
class Sample:
    at_s: float
    rss_bytes: int
    threads: int


@dataclass
class SoakResult:
    """What one soak run saw; ``problems`` is empty when the server held up."""

    samples: list[Sample]
    outcomes: dict[str, Counter[Outcome]]
    unexpected: dict[str, Counter[Outcome]]
    rss_bound_bytes: int
    thread_bound: int
    serving_at_end: bool
    problems: list[str] = field(default_factory=list)

    @property
    def start(self) -> Sample:
        return self.samples[0]

    @property
    def end(self) -> Sample:
        return self.samples[-1]

    def _at(self, fraction: float) -> Sample:
        return self.samples[round(fraction * (len(self.samples) - 1))]

    def max_rss(self) -> int:
        return max(s.rss_bytes for s in self.samples)

    def max_threads(self) -> int:
        return max(s.threads for s in self.samples)

    def report(self) -> str:
        mb = 1 << 20
        lines = [
            f"samples: {len(self.samples)} over {self.end.at_s - self.start.at_s:.0f} s",
            f"RSS MB: start {self.start.rss_bytes / mb:.0f}, end {self.end.rss_bytes / mb:.0f}, "
            f"max {self.max_rss() / mb:.0f} (bound: start + {self.rss_bound_bytes / mb:.0f})",
            "RSS MB at 0/25/50/75/100 % of the run: "
            + " / ".join(f"{self._at(q).rss_bytes / mb:.0f}" for q in (0, 0.25, 0.5, 0.75, 1)),
            f"threads: start {self.start.threads}, end {self.end.threads}, max {self.max_threads()} "
            f"(bound: start + {self.thread_bound})",
            f"{'kind':<22} {'requests':>9}  outcomes",
        ]
        for kind, counts in self.outcomes.items():
            shown = ", ".join(f"{o} x{n}" for o, n in counts.most_common())
            lines.append(f"{kind:<22} {sum(counts.values()):>9}  {shown}")
        total = sum(sum(c.values()) for c in self.outcomes.values())
        bad = sum(sum(c.values()) for c in self.unexpected.values())
        lines.append(f"requests: {total}, unexpected outcomes: {bad}; serving at the end: {self.serving_at_end}")
        lines += [f"PROBLEM: {p}" for p in self.problems]
        return "\n".join(lines)


# -- traffic ------------------------------------------------------------------------------------


def _post(port: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> Outcome:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    try:
        conn.request("POST", path, body=body, headers=headers or {})
        reply = conn.getresponse()
        reply.read()
        return str(reply.status)
    except (ConnectionError, http.client.HTTPException, TimeoutError) as exc:
        return type(exc).__name__
    finally:
        conn.close()


def _raw(port: int, data: bytes, *, close_early: bool = False) -> Outcome:
    """Send raw bytes; the status of the reply, or "closed" when the server closed without one."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
            sock.sendall(data)
            if close_early:
                return "sent"
            reply = sock.recv(64)
    except (ConnectionError, TimeoutError) as exc:
        return type(exc).__name__
    if not reply:
        return "closed"
    parts = reply.split(b" ", 2)
    return parts[1].decode() if len(parts) > 1 else "garbage"


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (width, height), 0).save(out, format="PNG")
    return out.getvalue()


def _huge_png() -> bytes:
    """A 20000x20000 1-bit PNG of about 1 MB (decoded as RGB: 1.2 GB)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    side = 20000
    packer = zlib.compressobj(9)
    row = b"\0" * (1 + (side + 7) // 8)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _bytes_body(image: bytes) -> bytes:
    return orjson.dumps({"signature_name": "serving_bytes", "instances": [{"b64": base64.b64encode(image).decode()}]})


Probe = tuple[Callable[[int], Outcome], frozenset[Outcome]]


def build_probes(max_body_bytes: int) -> dict[str, Probe]:
    """Each kind of request: how to send it, and the outcomes that count as the server coping."""
    rng = np.random.default_rng(7)
    one = orjson.dumps(
        {"instances": rng.integers(0, 256, (1, 128, 128, 3), dtype=np.uint8)}, option=orjson.OPT_SERIALIZE_NUMPY
    )
    eight = orjson.dumps(
        {"instances": rng.integers(0, 256, (8, 128, 128, 3), dtype=np.uint8)}, option=orjson.OPT_SERIALIZE_NUMPY
    )
    small_png, huge_png = _bytes_body(_png(128, 128)), _bytes_body(_huge_png())
    bomb = gzip.compress(b" " * (max_body_bytes + 1024))
    head = f"POST {PREDICT} HTTP/1.1\r\nHost: soak\r\n"
    closed = frozenset({"closed", "ConnectionResetError", "BrokenPipeError"})
    chunked_over = f"{head}Transfer-Encoding: chunked\r\n\r\n".encode() + (
        b"%x\r\n" % 65536 + b" " * 65536 + b"\r\n"
    ) * (max_body_bytes // 65536 + 2)
    return {
        "predict-1": (lambda p: _post(p, PREDICT, one), frozenset({"200"})),
        "predict-8": (lambda p: _post(p, PREDICT, eight), frozenset({"200"})),
        "predict-png": (lambda p: _post(p, PREDICT, small_png), frozenset({"200"})),
        "bad-json": (lambda p: _post(p, PREDICT, b'{"instances": [1,'), frozenset({"400"})),
        "deep-json": (
            lambda p: _post(p, PREDICT, b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
            frozenset({"400"}),
        ),
        "huge-number": (lambda p: _post(p, PREDICT, b'{"instances": [' + b"9" * 5000 + b"]}"), frozenset({"400"})),
        "png-20000x20000": (lambda p: _post(p, PREDICT, huge_png), frozenset({"400"})),
        "declared-too-large": (
            lambda p: _raw(p, f"{head}Content-Length: {max_body_bytes + 1}\r\n\r\n".encode()),
            frozenset({"413"}),
        ),
        "gzip-bomb": (lambda p: _post(p, PREDICT, bomb, {"Content-Encoding": "gzip"}), frozenset({"413"})),
        "bad-chunk-size": (
            lambda p: _raw(p, f"{head}Transfer-Encoding: chunked\r\n\r\n-1\r\nabc\r\n".encode()),
            frozenset({"400"}),
        ),
        "chunked-too-large": (lambda p: _raw(p, chunked_over), frozenset({"413"}) | closed),
        "half-head": (lambda p: _raw(p, head.encode(), close_early=True), frozenset({"sent"})),
        "gone-mid-body": (
            lambda p: _raw(p, f"{head}Content-Length: 100000\r\n\r\n".encode() + b"[" * 5000, close_early=True),
            frozenset({"sent"}),
        ),
        "idle-connection": (lambda p: _raw(p, b"", close_early=True), frozenset({"sent"})),
    }


# -- the server and its samples -----------------------------------------------------------------


def _start_server(base: Path, max_body_bytes: int, threads: int) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    argv = [
        sys.executable, "-m", "bench", "serve", "--port", "0", "--rest_api_port", "0", "--model_name", MODEL,
        "--model_base_path", str(base.resolve()), f"--rest_api_max_body_bytes={max_body_bytes}",
        f"--rest_api_num_threads={threads}",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = proc.stdout.readline()  # type: ignore[union-attr]  # stdout=PIPE
        if "listening on" in line:
            return proc, int(line.strip().rsplit(":", 1)[1])
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit("soak: the server did not start")


def sample(pid: int, started: float) -> Sample:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    rss = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
    threads = next(int(line.split()[1]) for line in status if line.startswith("Threads:"))
    return Sample(time.monotonic() - started, rss, threads)


def run_soak(
    base: Path,
    *,
    duration_s: float,
    clients: int = 4,
    max_body_bytes: int = 8 << 20,
    server_threads: int = 4,
    sample_every_s: float = 1.0,
    max_requests: int = 1_000_000,
) -> SoakResult:
    """Start a server for ``base``, soak it, stop it; the figures and the verdict."""
    probes = build_probes(max_body_bytes)
    proc, port = _start_server(base, max_body_bytes, server_threads)
    outcomes: dict[str, Counter[Outcome]] = {kind: Counter() for kind in probes}
    lock = threading.Lock()
    try:
        for send, _ in probes.values():  # warm-up: every path taken once before the start sample
            send(port)
        started = time.monotonic()
        samples = [sample(proc.pid, started)]
        stop = threading.Event()
        budget = iter(range(max_requests))

        def client(offset: int) -> None:
            kinds = list(probes)
            i = offset
            while not stop.is_set() and next(budget, None) is not None:
                kind = kinds[i % len(kinds)]
                outcome = probes[kind][0](port)
                with lock:
                    outcomes[kind][outcome] += 1
                i += 1

        workers = [threading.Thread(target=client, args=(n * 3,), daemon=True) for n in range(clients)]
        for worker in workers:
            worker.start()
        deadline = started + duration_s
        while time.monotonic() < deadline and any(w.is_alive() for w in workers):
            time.sleep(min(sample_every_s, max(deadline - time.monotonic(), 0.01)))
            samples.append(sample(proc.pid, started))
        stop.set()
        for worker in workers:
            worker.join(timeout=TIMEOUT_S * 3)
        samples.append(sample(proc.pid, started))
        serving = _post(port, PREDICT, b'{"instances": [[[[0, 0, 0]]]]}') in ("200", "400")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    unexpected = {
        kind: Counter({o: n for o, n in counts.items() if o not in probes[kind][1]})
        for kind, counts in outcomes.items()
    }
    unexpected = {kind: c for kind, c in unexpected.items() if c}
    result = SoakResult(
        samples=samples,
        outcomes=outcomes,
        unexpected=unexpected,
        rss_bound_bytes=3 * max_body_bytes * clients + SLACK_BYTES,
        thread_bound=2 * server_threads,
        serving_at_end=serving,
    )
    if unexpected:
        result.problems.append("unexpected outcomes: " + "; ".join(f"{k}: {dict(c)}" for k, c in unexpected.items()))
    if result.max_rss() > result.start.rss_bytes + result.rss_bound_bytes:
        result.problems.append("RSS grew past its bound")
    if result.max_threads() > result.start.threads + result.thread_bound:
        result.problems.append("threads grew past the two pools")
    if not serving:
        result.problems.append("the server stopped serving")
    if proc.returncode != 0:
        result.problems.append(f"the server exited {proc.returncode} on SIGTERM")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=argtypes.duration_s, default=600.0, metavar="D", help="default 10m")
    parser.add_argument("--clients", type=argtypes.positive_int, default=4, metavar="N", help="client threads (4)")
    parser.add_argument(
        "--max-body-bytes", type=argtypes.positive_int, default=8 << 20, metavar="N", help="server body limit (8 MiB)"
    )
    parser.add_argument(
        "--server-threads", type=argtypes.positive_int, default=4, metavar="N", help="--rest_api_num_threads (4)"
    )
    parser.add_argument("--sample-every", type=argtypes.duration_s, default=1.0, metavar="D", help="default 1s")
    parser.add_argument(
        "--model-base-path", type=Path, default=None, metavar="DIR", help="default: export tiny to a temp dir"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with tempfile.TemporaryDirectory(prefix="tfsbench-soak-") as tmp:
        base = args.model_base_path
        if base is None:
            export_model(Path(tmp), model_name=MODEL, version=1, size="tiny")
            base = Path(tmp) / MODEL
        print(
            f"soak: {args.duration:.0f} s, {args.clients} clients, body limit {args.max_body_bytes} bytes", flush=True
        )
        result = run_soak(
            base,
            duration_s=args.duration,
            clients=args.clients,
            max_body_bytes=args.max_body_bytes,
            server_threads=args.server_threads,
            sample_every_s=args.sample_every,
        )
    print(result.report())
    return 1 if result.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
