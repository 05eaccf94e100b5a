"""``--expect-workers N``: sweep and capacity cells run on Locust workers started elsewhere.

Each cell's master binds ``--master-bind-host:--master-bind-port`` (loopback unless told
otherwise), waits for N workers, runs the cell on them and, at its end, detaches them instead of
quitting them (``--keep-workers``): they stay up and join the next cell's master on the same
port. Workers need this checkout (the same tfsbench version: the master refuses another in one
line), the target's URL reachable from where they run, and nothing else: the options, the input
plan and the records travel over Locust's messages (bench.scenario.relay).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import Any

from bench.errors import ConfigError

DEFAULT_MASTER_PORT = 5557  # Locust's own default
LOOPBACK = "127.0.0.1"


def worker_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The SweepConfig/CapacityConfig fields for remote workers, checked (ConfigError: one line)."""
    expect = int(getattr(args, "expect_workers", 0) or 0)
    host = str(getattr(args, "master_bind_host", None) or LOOPBACK)
    port = int(getattr(args, "master_bind_port", None) or DEFAULT_MASTER_PORT)
    if not expect and (getattr(args, "master_bind_host", None) or getattr(args, "master_bind_port", None)):
        raise ConfigError("--master-bind-host/--master-bind-port need --expect-workers N")
    if expect and getattr(args, "processes", 1) > 1:
        raise ConfigError("--expect-workers runs every cell on remote workers: leave out --processes")
    return {
        "expect_workers": expect,
        "master_bind_host": host,
        "master_bind_port": port,
        "workers_wait_s": float(getattr(args, "workers_wait", None) or 300.0),
    }


def worker_command(locustfile: str, bind_host: str, port: int) -> str:
    """What to run on each load machine (from a checkout of the same version)."""
    reachable = (
        socket.gethostname() if bind_host in ("0.0.0.0", "*", "", "::") else bind_host
    )  # names the bind-all addresses
    rel = os.path.relpath(locustfile) if not os.path.relpath(locustfile).startswith("..") else locustfile
    return f"locust -f {rel} --worker --master-host {reachable} --master-port {port}"


def announce(command: str, expect: int, locustfile: str, bind_host: str, port: int, wait_s: float) -> None:
    """Say on stderr how to start the workers this run waits for."""
    if not expect:
        return
    print(
        f"{command}: every cell waits up to {wait_s:g} s for {expect} workers; on each load machine run:\n"
        f"  {worker_command(locustfile, bind_host, port)}",
        file=sys.stderr,
        flush=True,
    )
