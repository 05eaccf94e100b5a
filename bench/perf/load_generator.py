"""How many requests/s one Locust process drives: pre-encoded bodies vs encoding in the timed path.

    python -m bench.perf.load_generator [--batch 16] [--encodings row-orjson,b64-jpeg] [--duration 8] [--users 8]

Starts a trivial predict endpoint (asyncio, one process of its own, replies a fixed
``{"predictions": [...]}`` with ``batch`` rows without parsing the body) on 127.0.0.1, then runs
``locust -f locustfiles/predict.py`` headless with ``--processes`` unset (one process) twice per
encoding, side by side: with the pre-encoded payload pool, and with ``--encode-inline`` (each
body encoded inside the timed path). Prints requests/s, images/s, the generator's CPU and the
ratio pre-encoded / inline. The endpoint is trivial on purpose: the figure is the client's
ceiling, so a real server measured below it is measured, not the client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import SOURCE_ROOT, argtypes
from bench.store.load_stats import read_load_stats
from bench.store.records import read_records


class FixedReplyProtocol(asyncio.Protocol):
    """Minimal HTTP/1.1 keep-alive responder: reads Content-Length bytes, answers a fixed body.

    :meth:`answer` picks the reply from the request's head (lower-cased) and, where a subclass
    sets ``keep_body``, its body (the tests' queue server reads a batch's size from it); the
    body is otherwise dropped as it arrives.
    """

    keep_body = False

    def __init__(self, reply: bytes = b"") -> None:
        self.reply = reply
        self.buffer = bytearray()
        self.body = bytearray()
        self.head = b""
        self.remaining = -1  # body bytes still to read; -1 while reading headers

    def answer(self, head: bytes, body: bytes) -> bytes:
        return self.reply

    def send(self, reply: bytes) -> None:
        """Write one reply; subclasses may hold it back (a server with a service time)."""
        self.transport.write(reply)  # type: ignore[attr-defined]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.remaining < 0:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                self.head = bytes(self.buffer[:end]).lower()
                del self.buffer[: end + 4]
                self.remaining = 0
                for line in self.head.split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        self.remaining = int(line.split(b":", 1)[1])
            taken = min(len(self.buffer), self.remaining)
            if self.keep_body:
                self.body += self.buffer[:taken]
            del self.buffer[:taken]
            self.remaining -= taken
            if self.remaining > 0:
                return
            self.remaining = -1
            body, self.body = bytes(self.body), bytearray()
            self.send(self.answer(self.head, body))


def _serve(port_queue: multiprocessing.Queue[int], batch: int) -> None:
    body = json.dumps({"predictions": [{"classes": 3, "probabilities": [0.1] * 10}] * batch}).encode()
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: FixedReplyProtocol(reply), "127.0.0.1", 0)
        port_queue.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


@dataclass(frozen=True)
class Result:
    encoding: str
    inline: bool
    requests: int
    failures: int
    seconds: float
    payload_bytes: float
    encode_us: float
    cpu_pct: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def run_locust(host: str, encoding: str, batch: int, inline: bool, users: int, duration_s: int, tmp: Path) -> Result:
    tag = f"{encoding}-{'inline' if inline else 'pool'}"
    records = tmp / f"{tag}.csv"
    command = [
        sys.executable, "-m", "locust", "-f", "locustfiles/predict.py", "--headless", "--host", host,
        "-u", str(users), "-r", str(users), "-t", f"{duration_s}s", "--loglevel", "WARNING",
        "--json-file", str(tmp / tag), "--batch-sizes", str(batch), "--encodings", encoding,
        "--records", str(records), "--pool-size", "8", "--cpu-warn-pct", "101",
    ]  # fmt: skip
    if inline:
        command.append("--encode-inline")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TFSBENCH_")}
    subprocess.run(command, cwd=SOURCE_ROOT, env=env, check=True, capture_output=True, timeout=duration_s + 120)
    stats = json.loads((tmp / f"{tag}.json").read_text())
    frame = read_records(records)
    load = read_load_stats(records)
    # Throughput over the span of completed requests (ramp-up and shutdown excluded).
    ends = frame["t_start"] + frame["latency_ms"] / 1000
    seconds = float(ends.max() - frame["t_start"].min()) if len(frame) else 0.0
    return Result(
        encoding=encoding,
        inline=inline,
        requests=sum(s["num_requests"] for s in stats),
        failures=sum(s["num_failures"] for s in stats),
        seconds=seconds,
        payload_bytes=float(frame["payload_bytes"].mean()) if len(frame) else 0.0,
        encode_us=float(frame["encode_us"].mean()) if len(frame) else 0.0,
        cpu_pct=load.client_cpu_pct_mean if load else float("nan"),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf.load_generator", description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=argtypes.positive_int, default=16, metavar="N", help="images per request")
    parser.add_argument(
        "--encodings", type=argtypes.name_list, default=["row-orjson", "b64-jpeg"], metavar="LIST",
        help="encodings to compare (default: row-orjson,b64-jpeg)",
    )  # fmt: skip
    parser.add_argument("--duration", type=argtypes.positive_int, default=8, metavar="S", help="seconds per run")
    parser.add_argument("--users", type=argtypes.positive_int, default=8, metavar="N", help="Locust users")
    args = parser.parse_args(argv)

    ports: multiprocessing.Queue[int] = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(ports, args.batch), daemon=True)
    server.start()
    try:
        host = f"http://127.0.0.1:{ports.get(timeout=30)}"
        print(f"one Locust process, {args.users} users, batch {args.batch}, {args.duration} s per run, "
              f"trivial endpoint {host}, {os.cpu_count()} CPUs")  # fmt: skip
        header = (
            f"{'encoding':<16} {'mode':<12} {'req/s':>8} {'images/s':>9} {'body KB':>8} {'encode ms':>9} {'CPU %':>6}"
        )
        print(header)
        with tempfile.TemporaryDirectory() as tmp:
            for encoding in args.encodings:
                pair = []
                for inline in (False, True):
                    started = time.perf_counter()
                    result = run_locust(host, encoding, args.batch, inline, args.users, args.duration, Path(tmp))
                    pair.append(result)
                    mode = "inline" if inline else "pre-encoded"
                    print(
                        f"{encoding:<16} {mode:<12} {result.rps:>8.0f} {result.rps * args.batch:>9.0f} "
                        f"{result.payload_bytes / 1024:>8.1f} {result.encode_us / 1000:>9.2f} {result.cpu_pct:>6.0f}"
                        + (f"  ({result.failures} failures)" if result.failures else "")
                        + f"  [{time.perf_counter() - started:.0f} s]"
                    )
                ratio = pair[0].rps / pair[1].rps if pair[1].rps else float("inf")
                print(f"{encoding:<16} pre-encoded / inline = {ratio:.2f}x requests/s")
        print("encode ms: per body; pre-encoded rows show the pool's one-time cost, paid before the timed path.")
        print("CPU %: the Locust process, 100 = one core; near 100 the client, not the endpoint, is the limit.")
    finally:
        server.terminate()
        server.join(timeout=5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
