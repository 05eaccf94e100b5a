"""The target flags that sweep and capacity share: ``--host`` (one URL or several replicas),
``--wait-ready``, and capacity's ``--replicas`` (replica counts measured on deploy/compose.yaml)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench import argtypes


class Hosts(argparse.Action):
    """``--host``: one URL, URL1,URL2,... or the flag repeated (replicas: bench.target.replicas)."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object, option: object = None
    ) -> None:
        previous = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, f"{previous},{values}" if previous else str(values))


HOSTS_HELP = (
    "TF Serving REST endpoint, e.g. http://127.0.0.1:8501; several replicas: URL1,URL2 or --host repeated "
    "(each user keeps one, in turn)"
)


def add_wait_ready(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--wait-ready",
        type=argtypes.non_negative_duration_s,
        default=0.0,
        metavar="DURATION",
        help="first wait up to DURATION for every --host replica to serve the model (replicas started "
        "beside the load generator, as deploy/compose.yaml does; default 0: no wait)",
    )


def add_replicas_arguments(p: argparse.ArgumentParser) -> None:
    """capacity --replicas and what it deploys (bench.commands.scaling)."""
    p.add_argument(
        "--replicas",
        type=argtypes.int_list,
        default=None,
        metavar="LIST",
        help="instead of --host: measure at each replica count (e.g. 1,2) on deploy/compose.yaml's serving "
        "service, each replica --serving-cpus CPUs, and report the scaling efficiency (needs docker-compose)",
    )
    p.add_argument(
        "--serving-image",
        default=None,
        metavar="IMAGE",
        help="--replicas: the serving image (default $SERVING_IMAGE, else tensorflow/serving)",
    )
    p.add_argument(
        "--model-base-path",
        type=Path,
        default=None,
        metavar="DIR",
        help="--replicas: the model directory mounted into each replica (default models/NAME)",
    )
    p.add_argument(
        "--serving-cpus",
        type=argtypes.positive_float,
        default=1.0,
        metavar="N",
        help="--replicas: each replica's CPU share (default 1)",
    )
