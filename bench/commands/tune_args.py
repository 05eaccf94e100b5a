"""``tfsbench tune``'s flags: its own, and the capacity search's, borrowed from ``tfsbench capacity``.

Kept apart from bench.cli, which would otherwise pass its size limit; the search flags are the
very argparse actions of ``capacity`` (same names, defaults and help), so the two cannot drift.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from bench import argtypes

# capacity's flags that mean something else (or nothing) for tune.
_NOT_BORROWED = {
    *("help", "host", "batch_sizes", "target", "headroom", "report", "out"),
    *("replicas", "serving_image", "model_base_path", "serving_cpus"),  # capacity --replicas: compose replicas
}

Handler = Callable[[argparse.Namespace], int]


def add_tune_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], handler: Handler) -> None:
    """Add ``tune`` to ``sub``, after ``capacity`` (whose search flags it shares)."""
    p = sub.add_parser(
        "tune",
        help="search server batching configurations for the most images/s within an SLO",
        description="One server start per batching configuration (batching off always, as the baseline), then "
        "tfsbench capacity's search for each client batch size and encoding. The search starts where "
        "tensorflow/serving's batching guide says to (num_batch_threads = CPU cores, the highest max_batch_size, "
        "batch_timeout_micros 0) and moves one parameter at a time while throughput within the SLO improves; it "
        "never walks the whole grid. Writes tune.csv, the recommended batching_parameters.txt, each "
        "configuration's capacity run and report.html (the throughput-vs-latency front) into a run directory.",
    )
    p.add_argument(
        "--space",
        required=True,
        metavar="SPACE",
        help="values per parameter, e.g. 'max_batch_size=8,32,128;batch_timeout_micros=0,2000,10000;"
        "num_batch_threads=1,2' (also max_enqueued_batches; max_batch_size is required)",
    )
    target = p.add_mutually_exclusive_group()
    target.add_argument("--embedded", action="store_true", help="tune the embedded server (tfsbench serve)")
    target.add_argument("--docker", metavar="IMAGE", help="tune IMAGE (tensorflow/serving or the stand-in) in Docker")
    p.add_argument(
        "--model-base-path", type=Path, required=True, metavar="DIR", help="the model's directory (DIR/<version>/)"
    )
    p.add_argument("--cpus", type=argtypes.positive_float, default=None, metavar="N", help="container CPU limit")
    p.add_argument("--memory", default=None, metavar="M", help="container memory limit, e.g. 4g")
    p.add_argument(
        "--client-batch-sizes",
        dest="batch_sizes",
        type=argtypes.int_list,
        default=[1],
        metavar="LIST",
        help="images per request the clients send, e.g. 1,4 (default 1: single-image clients)",
    )
    p.add_argument(
        "--max-configs", type=argtypes.positive_int, default=12, metavar="N", help="configurations at most (default 12)"
    )
    p.add_argument(
        "--budget",
        type=argtypes.duration_s,
        default=None,
        metavar="TIME",
        help="no configuration starts that would end past this, e.g. 30m (default: no limit)",
    )
    p.add_argument(
        "--resume", type=Path, default=None, metavar="RUN", help="continue an interrupted tune run (same --space)"
    )
    p.add_argument("--no-report", dest="report", action="store_false", help="skip building report.html at the end")
    p.add_argument("--out", type=Path, default=Path("runs"), metavar="DIR", help="runs directory (default runs)")
    capacity = sub.choices["capacity"]
    for action in capacity._actions:  # the search's flags, shared as argparse's parents= shares them
        if action.dest not in _NOT_BORROWED:
            p._add_action(action)
    p.set_defaults(handler=handler)
