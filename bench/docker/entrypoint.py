"""``tensorflow_model_server`` inside the stand-in image: TF flags in, ``tfsbench serve`` out.

The stand-in image must accept whatever a user would pass to tensorflow/serving's image
(``docker run IMAGE --enable_batching=true --tensorflow_intra_op_parallelism=2 ...``). This
module translates tensorflow_model_server's flag syntax (``--name=value``, booleans as
``--flag``/``--flag=true``/``--flag=false``) into ``tfsbench serve`` arguments:

- flags ``tfsbench serve`` has (same names) are passed on;
- other genuine tensorflow_model_server flags are accepted and reported as ignored;
- anything else is refused, as tensorflow_model_server refuses unknown flags.

``host_main`` is the same translation as the ``tensorflow_model_server`` console script, for
running tensorflow/serving's own test suite (or anything else that starts that binary) against
``tfsbench serve`` on this machine, bound to loopback.

In the container it is also the tiny init: as PID 1 it starts the server as a child, forwards
SIGTERM/SIGINT to it and reaps it, so ``docker stop`` ends the container at once (a PID 1
without handlers would ignore SIGTERM and wait for SIGKILL).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

from bench import __version__
from bench.errors import ConfigError
from bench.serving.flags import Translation, add_serve_arguments, serve_options, translate


def container_serve_args(translation: Translation, options: dict[str, bool]) -> list[str]:
    """Serve arguments for a container: listen on every interface so the published port reaches it."""
    args = list(translation.serve_args)
    if "rest_api_host" in options and not any(a.startswith("--rest_api_host") for a in args):
        args.append("--rest_api_host=0.0.0.0")
    return args


def run_child(argv: Sequence[str]) -> int:
    """Run ``argv`` as a child, forwarding termination signals; return its exit status.

    A child ended by a signal we forwarded counts as a clean stop (0), so ``docker stop``
    reports exit code 0 as it does for a server that shuts down on SIGTERM.
    """
    child = subprocess.Popen(list(argv))
    forwarded: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        forwarded.append(signum)
        if child.poll() is None:
            child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, forward)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue
        # As PID 1 we also adopt orphans; their statuses are reaped here and dropped.
        if pid == child.pid:
            code = os.waitstatus_to_exitcode(status)
            if code < 0:
                return 0 if -code in forwarded else 128 - code
            return 0 if code in (130, 143) and forwarded else code


def _translate(argv: Sequence[str], who: str) -> tuple[Translation, dict[str, bool]] | int:
    """The serve flags for a tensorflow_model_server argv; an exit status where there is nothing to run."""
    if any(arg in ("--help", "-h", "--helpfull") for arg in argv):
        parser = argparse.ArgumentParser(
            prog="tensorflow_model_server",
            description=f"tensorflow_model_server's command line, run by tfsbench serve ({who}). Flags of "
            "tensorflow_model_server that tfsbench serve lacks are accepted and reported as not implemented.",
        )
        add_serve_arguments(parser)
        parser.print_help()
        return 0
    try:
        options = serve_options()
        translation = translate(argv, options)
    except ConfigError as exc:
        print(f"tensorflow_model_server ({who}): {exc}", file=sys.stderr)
        return 1
    if translation.show_version:
        print(f"TensorFlow ModelServer: {who} {__version__} (server: tfsbench serve)")
        return 0
    for flag in translation.ignored:
        print(f"tensorflow_model_server ({who}): accepted but not implemented: {flag}", file=sys.stderr)
    return translation, options


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tensorflow_model_server`` in the stand-in image."""
    translated = _translate(sys.argv[1:] if argv is None else argv, "tfsbench stand-in")
    if isinstance(translated, int):
        return translated
    translation, options = translated
    command = [sys.executable, "-m", "bench", "serve", *container_serve_args(translation, options)]
    print("tensorflow_model_server (tfsbench stand-in): " + " ".join(command[1:]), file=sys.stderr, flush=True)
    return run_child(command)


def host_main(argv: Sequence[str] | None = None) -> int:
    """The ``tensorflow_model_server`` console script: the same translation, on this machine.

    Binds 127.0.0.1 unless ``--rest_api_host`` says otherwise, and replaces itself with the
    server (``exec``), so whoever started it (a test suite that kills its servers) holds the
    server's own process.
    """
    translated = _translate(sys.argv[1:] if argv is None else argv, "tfsbench")
    if isinstance(translated, int):
        return translated
    command = [sys.executable, "-m", "bench", "serve", *translated[0].serve_args]
    print("tensorflow_model_server (tfsbench): " + " ".join(command[1:]), file=sys.stderr, flush=True)
    os.execv(sys.executable, command)
    return 0  # not reached: execv replaces the process


if __name__ == "__main__":
    sys.exit(main())
