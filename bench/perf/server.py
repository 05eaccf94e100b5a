"""Benchmark of the embedded server: is the server what a benchmark would measure?

``python -m bench.perf.server [--batch-sizes 16,64] [--seconds 8] [--connections 4]
[--compare-with DIR]`` prints, measured side by side in one run (TensorFlow loaded, model
loaded, ``gc.freeze()`` done):

1. server-side decode of a row-format uint8 body: the numpy fast path vs
   ``np.asarray(orjson.loads(body)["instances"], dtype=np.uint8)`` (target: >= 5x);
2. end-to-end images/s over HTTP on loopback (pre-encoded bodies, several keep-alive
   connections, server in its own process) vs the same work in-process in one loop (decode the
   same bodies, run the signature, encode the response) (target: >= 0.7x), with the median
   request latency over HTTP;
3. with ``--compare-with DIR`` (another checkout of this project, e.g. ``git archive main``
   unpacked): this checkout's server vs that one's, in alternating slices, images/s and median
   latency per batch size (target: >= 0.9x images/s, batch-1 median no worse).

Without ``--model-base-path`` the tiny reference model is exported to a temporary directory.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson

from bench import argtypes
from bench.serving.json_response import encode_predict_response
from bench.serving.json_tensor import decode_predict_body
from bench.serving.model_config import ModelConfig
from bench.serving.model_store import ModelStore
from bench.serving.server import tune_malloc
from export import export_model

MODEL = "classifier"


def _best_ms(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def _bodies(batch: int, count: int = 4) -> list[bytes]:
    rng = np.random.default_rng(batch)
    return [
        orjson.dumps({"instances": rng.integers(0, 256, (batch, 128, 128, 3), dtype=np.uint8).tolist()})
        for _ in range(count)
    ]


def _start_server(base: Path, checkout: Path | None = None) -> tuple[subprocess.Popen[str], int]:
    """``python -m bench serve`` of this checkout, or of ``checkout`` (its ``bench`` package first)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if checkout is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(checkout), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench",
            "serve",
            "--rest_api_port",
            "0",
            "--model_name",
            MODEL,
            "--model_base_path",
            str(base.resolve()),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=checkout,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if "listening on" in line:
            return proc, int(line.strip().rsplit(":", 1)[1])
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit("bench_server: the server did not start")


def _http_load(
    port: int, bodies: list[bytes], batch: int, connections: int, seconds: float
) -> tuple[float, list[float]]:
    """(images/s, per-request latencies in s) of ``connections`` keep-alive clients for ``seconds``."""
    done = [0] * connections
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors: list[str] = []
    stop_at = time.perf_counter() + seconds

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        n = 0
        while time.perf_counter() < stop_at:
            sent = time.perf_counter()
            conn.request("POST", f"/v1/models/{MODEL}:predict", body=bodies[(i + n) % len(bodies)])
            reply = conn.getresponse()
            reply.read()
            latencies[i].append(time.perf_counter() - sent)
            if reply.status != 200:
                errors.append(str(reply.status))
                break
            n += 1
        done[i] = n
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise SystemExit(f"bench_server: HTTP errors {errors[:3]}")
    return sum(done) * batch / elapsed, [x for per in latencies for x in per]


def _compare(
    base: Path, other: Path, bodies_by_batch: dict[int, list[bytes]], connections: int, seconds: float
) -> None:
    """This checkout's server vs ``other``'s, both up at once, measured in alternating slices."""
    print(f"\n3. this server vs {other} ({connections} connections; alternating slices)")
    print(f"{'batch':>5} {'this img/s':>11} {'other img/s':>12} {'ratio':>6} {'this p50 ms':>12} {'other p50 ms':>13}")
    mine, mine_port = _start_server(base)
    theirs, their_port = _start_server(base, other)
    try:
        for batch, bodies in bodies_by_batch.items():
            rates: dict[int, list[float]] = {mine_port: [], their_port: []}
            lat: dict[int, list[float]] = {mine_port: [], their_port: []}
            rounds = 4
            for r in range(rounds):
                order = (mine_port, their_port) if r % 2 == 0 else (their_port, mine_port)
                for port in order:
                    rate, latencies = _http_load(port, bodies, batch, connections, seconds / rounds)
                    rates[port].append(rate)
                    lat[port] += latencies
            a, b = float(np.mean(rates[mine_port])), float(np.mean(rates[their_port]))
            pa, pb = (float(np.median(lat[p])) * 1000 for p in (mine_port, their_port))
            print(f"{batch:>5} {a:>11.0f} {b:>12.0f} {a / b:>5.2f}x {pa:>12.2f} {pb:>13.2f}")
    finally:
        for proc in (mine, theirs):
            proc.terminate()
            proc.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf.server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=argtypes.int_list, default=[16, 64], metavar="LIST", help="default 16,64")
    parser.add_argument(
        "--seconds", type=argtypes.positive_float, default=8.0, metavar="S", help="per HTTP/in-process cell"
    )
    parser.add_argument(
        "--connections", type=argtypes.positive_int, default=4, metavar="N", help="concurrent connections"
    )
    parser.add_argument(
        "--repeat", type=argtypes.positive_int, default=5, metavar="N", help="decode timing repeats (best of)"
    )
    parser.add_argument(
        "--model-base-path", type=Path, default=None, metavar="DIR", help="default: export tiny to a temp dir"
    )
    parser.add_argument(
        "--compare-with",
        type=Path,
        default=None,
        metavar="DIR",
        help="another checkout of this project: its server vs this one, side by side",
    )
    args = parser.parse_args(argv)
    if args.compare_with is not None and not (args.compare_with / "bench" / "serving").is_dir():
        parser.error(f"--compare-with {args.compare_with}: not a checkout of this project (no bench/serving)")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    tmp = None
    base = args.model_base_path
    if base is None:
        tmp = tempfile.TemporaryDirectory(prefix="tfsbench-bench-")
        export_model(Path(tmp.name), model_name=MODEL, version=1, size="tiny")
        base = Path(tmp.name) / MODEL
    tune_malloc()  # what the server process does: both sides of the comparison get it
    store = ModelStore([ModelConfig(MODEL, base)], poll_wait_s=0)
    store.poll_once()  # loads TensorFlow and the model, warms up, gc.freeze()
    loaded = store.lookup(MODEL)
    inputs = loaded.signature_inputs("")
    gc.collect()
    gc.freeze()
    print(f"TensorFlow and model loaded; gc.freeze() done; {os.cpu_count()} CPUs")

    print(f"\n1. server-side decode, row JSON uint8 128x128x3 (best of {args.repeat})")
    print(f"{'batch':>5} {'MB':>6} {'orjson+asarray ms':>18} {'fast ms':>8} {'fast MB/s':>10} {'speed-up':>9}")
    bodies_by_batch = {b: _bodies(b) for b in args.batch_sizes}
    for batch, bodies in bodies_by_batch.items():
        body = bodies[0]
        reference = np.asarray(orjson.loads(body)["instances"], dtype=np.uint8)
        assert np.array_equal(decode_predict_body(body, inputs).tensors["examples"], reference)

        def decode_orjson(body: bytes = body) -> object:
            return np.asarray(orjson.loads(body)["instances"], dtype=np.uint8)

        def decode_fast(body: bytes = body) -> object:
            return decode_predict_body(body, inputs)

        base_ms = _best_ms(decode_orjson, args.repeat)
        fast_ms = _best_ms(decode_fast, args.repeat)
        mb = len(body) / 1e6
        speed = f"{mb / fast_ms * 1000:>10.0f} {base_ms / fast_ms:>8.1f}x"
        print(f"{batch:>5} {mb:>6.1f} {base_ms:>18.1f} {fast_ms:>8.1f} {speed}")

    print(f"\n2. end-to-end images/s: HTTP ({args.connections} connections, server process) vs in-process loop")
    print(f"{'batch':>5} {'in-process img/s':>17} {'HTTP img/s':>11} {'ratio':>6} {'HTTP p50 ms':>12}")
    proc, port = _start_server(base)
    try:
        for batch, bodies in bodies_by_batch.items():
            # Alternate short in-process and HTTP slices so both see the same machine load.
            local_images = local_s = remote = 0.0
            latencies: list[float] = []
            rounds = 3
            for _ in range(rounds):
                n = 0
                started = time.perf_counter()
                stop_at = started + args.seconds / rounds
                while time.perf_counter() < stop_at:
                    decoded = decode_predict_body(bodies[n % len(bodies)], inputs)
                    encode_predict_response(loaded.run("serving_default", decoded.tensors), decoded.row_format)
                    n += 1
                local_images += n * batch
                local_s += time.perf_counter() - started
                rate, slice_latencies = _http_load(port, bodies, batch, args.connections, args.seconds / rounds)
                remote += rate / rounds
                latencies += slice_latencies
            local = local_images / local_s
            p50 = float(np.median(latencies)) * 1000
            print(f"{batch:>5} {local:>17.0f} {remote:>11.0f} {remote / local:>5.2f}x {p50:>12.2f}")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    try:
        if args.compare_with is not None:
            _compare(base, args.compare_with, bodies_by_batch, args.connections, args.seconds)
    finally:
        store.stop()
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
