"""``tfsbench docker``'s flags, beside the launcher whose defaults (image, name, limits) they show.

Kept apart from bench.cli, which would otherwise pass its size limit.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from bench import argtypes
from bench.docker.launcher import DEFAULT_IMAGE, DEFAULT_NAME, validate_memory, validate_name
from bench.docker.loadgen import LOADGEN_TAG
from bench.docker.standin import STANDIN_TAG

Handler = Callable[[argparse.Namespace], int]


def add_docker_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], handler: Handler) -> None:
    """Add ``docker`` (up, down, logs, build-standin, build-loadgen) to ``sub``."""
    p = sub.add_parser(
        "docker",
        help="start, stop or inspect a tensorflow/serving container",
        description="up: run IMAGE as TF Serving's docs do (-p 127.0.0.1:PORT:8501, model bind-mounted to "
        "/models/NAME, -e MODEL_NAME) and wait until the model is AVAILABLE. down: stop and remove. "
        "logs: the container's output. build-standin: build, offline, an image with tensorflow/serving's "
        "interface whose server is tfsbench serve. build-loadgen: build, offline, the load generator's image "
        f"({LOADGEN_TAG}: tfsbench and Locust, for deploy/compose.yaml and deploy/k8s).",
    )
    p.add_argument("action", choices=("up", "down", "logs", "build-standin", "build-loadgen"), help="what to do")
    p.add_argument(
        "--model-base-path",
        type=Path,
        default=Path("models/classifier"),
        metavar="DIR",
        help="host model directory (default models/classifier)",
    )
    p.add_argument("--model-name", default=None, metavar="NAME", help="model name (default: the directory's name)")
    p.add_argument(
        "--image",
        default=DEFAULT_IMAGE,
        metavar="IMAGE",
        help=f"e.g. tensorflow/serving:2.18.0 or {STANDIN_TAG} (default {DEFAULT_IMAGE})",
    )
    p.add_argument(
        "--port",
        type=argtypes.port,
        default=8501,
        metavar="PORT",
        help="host port for the REST API (default 8501; 0 lets Docker choose)",
    )
    p.add_argument(
        "--grpc-port",
        type=argtypes.port,
        default=None,
        metavar="PORT",
        help="host port for the gRPC API (default 8500, or Docker's choice when --port is 0; 0 lets Docker choose)",
    )
    p.add_argument(
        "--bind",
        default="127.0.0.1",
        metavar="ADDR",
        help="host address to publish on (default 127.0.0.1; 0.0.0.0 for all)",
    )
    p.add_argument(
        "--cpus",
        type=argtypes.positive_float,
        default=None,
        metavar="N",
        help="CPU limit, e.g. 2 or 1.5 (default none)",
    )
    p.add_argument(
        "--memory", type=validate_memory, default=None, metavar="M", help="memory limit, e.g. 2g (default none)"
    )
    p.add_argument(
        "--batching-parameters",
        type=Path,
        default=None,
        metavar="FILE",
        help="BatchingParameters text file: mounted, --enable_batching on",
    )
    p.add_argument(
        "--monitoring", action="store_true", help="turn on the Prometheus endpoint /monitoring/prometheus/metrics"
    )
    p.add_argument(
        "--name",
        type=validate_name,
        default=DEFAULT_NAME,
        metavar="NAME",
        help=f"container name (default {DEFAULT_NAME})",
    )
    p.add_argument(
        "--timeout",
        type=argtypes.duration_s,
        default=120.0,
        metavar="TIME",
        help="how long up waits for AVAILABLE (default 120s)",
    )
    p.add_argument("--tail", type=argtypes.positive_int, default=None, metavar="N", help="logs: only the last N lines")
    p.add_argument(
        "--tag",
        default=None,
        metavar="TAG",
        help=f"build-standin / build-loadgen: image tag (default {STANDIN_TAG} / {LOADGEN_TAG})",
    )
    p.add_argument(
        "--standin-tag",
        default=STANDIN_TAG,
        metavar="TAG",
        help=f"build-loadgen: the stand-in whose base layer it builds on (default {STANDIN_TAG})",
    )
    p.add_argument("--rebuild", action="store_true", help="build-standin / build-loadgen: rebuild even if current")
    p.add_argument("--dry-run", action="store_true", help="print the docker command instead of running it")
    p.set_defaults(handler=handler)
