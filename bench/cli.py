"""The ``tfsbench`` command line (also ``python -m bench``).

Every sub-command's flags live here, so ``tfsbench <cmd> --help`` is the one reference, except
``docker``'s (bench.docker.cli_args) and ``tune``'s (bench.commands.tune_args, which borrows
capacity's search flags from here), kept apart for this module's size. Each handler imports its
implementation lazily: ``tfsbench codecs`` or ``tfsbench sweep`` must not pay for importing
TensorFlow, which only ``export``, ``serve`` and ``demo`` need.

Errors: a ``BenchError`` becomes one line on stderr and its exit code (2 for bad
configuration); Ctrl-C exits 130 after the command has saved what it recorded. Anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from bench import __version__, argtypes
from bench.api_names import PROMETHEUS_PATH
from bench.commands.arg_parser import ArgParser, subparser
from bench.commands.capacity_search import DEFAULT_TOLERANCE
from bench.commands.target_args import HOSTS_HELP, Hosts, add_replicas_arguments, add_wait_ready
from bench.commands.tune_args import add_tune_parser
from bench.docker.cli_args import add_docker_parser
from bench.errors import BenchError, is_disk_full
from bench.payloads.encodings import ENCODING_NAMES
from bench.payloads.input_flags import add_codecs_input_arguments, add_input_arguments
from bench.serving.flags import add_serve_arguments
from export.saved_model import DEFAULT_SEED, export_model
from export.variants import VariantSpec, add_variant_arguments, export_variant


def _handler(module: str, function: str) -> Callable[[argparse.Namespace], int]:
    """A handler that imports ``module`` only when its sub-command runs."""

    def run(args: argparse.Namespace) -> int:
        return int(getattr(importlib.import_module(module), function)(args) or 0)

    run.target = (module, function)  # type: ignore[attr-defined]  # read by tests/test_architecture.py
    return run


def _add_export(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "export",
        help="export the reference SavedModel in TF Serving's version layout",
        description="Export the reference image classifier to OUT/MODEL_NAME/VERSION/ "
        "(saved_model.pb + variables/), with signatures serving_default (uint8 examples "
        "[-1,128,128,3]) and serving_bytes (encoded PNG/JPEG image_bytes [-1]).",
    )
    p.add_argument("--out", type=Path, default=Path("models"), metavar="DIR", help="models directory (default: models)")
    p.add_argument("--model-name", default="classifier", metavar="NAME", help="model name (default: classifier)")
    p.add_argument("--version", type=argtypes.non_negative_int, default=1, metavar="N", help="version (default: 1)")
    p.add_argument(
        "--size",
        choices=("tiny", "small", "medium"),
        default="tiny",
        help="compute cost: tiny ~22 MFLOPs/image, small ~160, medium (ResNet-like) ~850 (default: tiny)",
    )
    p.add_argument("--seed", type=argtypes.non_negative_int, default=None, metavar="N", help="weight seed")
    p.add_argument(
        "--max-image-pixels",
        type=argtypes.positive_int,
        default=4096 * 4096,
        metavar="N",
        help="serving_bytes refuses (INVALID_ARGUMENT) images whose header declares more pixels, "
        "before decoding them (default 16777216 = 4096x4096)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing version directory")
    add_variant_arguments(p)
    p.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    variant = VariantSpec(args.variant, args.input_dtype, args.image_size, args.input_name)
    if not variant.is_reference:
        seed = DEFAULT_SEED if args.seed is None else args.seed
        print(export_variant(args.out, variant, args.model_name, args.version, args.force, seed).summary())
        return 0
    result = export_model(
        args.out,
        model_name=args.model_name,
        version=args.version,
        size=args.size,
        force=args.force,
        seed=DEFAULT_SEED if args.seed is None else args.seed,
        max_image_pixels=args.max_image_pixels,
    )
    print(result.summary())
    return 0


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the embedded TF-Serving-compatible REST server",
        description="Serve SavedModels over tensorflow/serving's REST API. Flags follow "
        "tensorflow_model_server's names and defaults.",
    )
    add_serve_arguments(p)
    p.set_defaults(handler=_handler("bench.serving.server", "run_serve"))


def _add_codecs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "codecs",
        help="measure payload size and encode/decode cost of each encoding",
        description="For each (batch size, encoding): body bytes, bytes per pixel value, client encode time, "
        "server decode time, and ratios against row-json and the memcpy floor (ndarray.tobytes()).",
    )
    p.add_argument(
        "--batch-sizes",
        type=argtypes.int_list,
        default=[1, 4, 16, 64],
        metavar="LIST",
        help="e.g. 1,16 (default 1,4,16,64)",
    )
    p.add_argument(
        "--encodings",
        type=argtypes.name_list,
        default=list(ENCODING_NAMES),
        metavar="LIST",
        help=f"subset of {','.join(ENCODING_NAMES)} (default: all)",
    )
    p.add_argument(
        "--images", type=Path, default=None, metavar="DIR", help="directory of PNG/JPEG images (default: synthetic)"
    )
    p.add_argument("--out", type=Path, default=None, metavar="FILE.csv", help="also write the table as CSV")
    p.add_argument(
        "--repeats",
        type=argtypes.positive_int,
        default=5,
        metavar="N",
        help="timed calls per cell, median reported (default 5; slow cells stop after ~3 s)",
    )
    add_codecs_input_arguments(p)
    p.set_defaults(handler=_handler("bench.commands.codecs", "run_codecs"))


def _add_encodings(p: argparse.ArgumentParser, default: list[str]) -> None:
    help_text = f"comma-separated, from {', '.join(ENCODING_NAMES)} (default {','.join(default)})"
    p.add_argument("--encodings", type=argtypes.name_list, default=default, metavar="LIST", help=help_text)


def _add_scenario_options(p: argparse.ArgumentParser, per: str) -> None:
    """What each Locust run sends: the options sweep and capacity pass on to locustfiles/predict.py."""
    p.add_argument("--model-name", default="classifier", metavar="NAME", help="served model name (default classifier)")
    p.add_argument(
        "--model-version",
        type=argtypes.positive_int,
        default=None,
        metavar="N",
        help="address /versions/N (default: latest)",
    )
    p.add_argument("--signature-name", default="", metavar="NAME", help="signature (default: the encoding's own)")
    p.add_argument(
        "--grpc-target",
        type=argtypes.grpc_target,
        default=None,
        metavar="HOST:PORT",
        help="where the grpc-* encodings go, PredictionService/Predict (default: --host's host, port 8500)",
    )
    p.add_argument(
        "--pool-size",
        type=argtypes.positive_int,
        default=None,
        metavar="N",
        help=f"pre-encoded bodies per {per} (Locust default 8)",
    )
    add_input_arguments(p)


def _add_worker_options(p: argparse.ArgumentParser, per: str) -> None:
    """--expect-workers and the master's address (bench.commands.workers)."""
    p.add_argument(
        "--expect-workers",
        type=argtypes.positive_int,
        default=0,
        metavar="N",
        help=f"run every {per} on N Locust workers started elsewhere "
        "(the command says how: locust -f locustfiles/predict.py --worker --master-host HOST)",
    )
    p.add_argument(
        "--master-bind-host",
        default=None,
        metavar="HOST",
        help="with --expect-workers: the address the master listens on for workers (default 127.0.0.1)",
    )
    p.add_argument(
        "--master-bind-port",
        type=argtypes.positive_int,
        default=None,
        metavar="PORT",
        help="with --expect-workers: the port the master listens on (default 5557)",
    )
    p.add_argument(
        "--workers-wait",
        type=argtypes.duration_s,
        default=300.0,
        metavar="DURATION",
        help=f"with --expect-workers: how long each {per} waits for its workers (default 300s)",
    )


def _add_stability(p: argparse.ArgumentParser, per: str, window_s: float) -> None:
    """--stability and --stability-window: measure until the last three windows agree (perf_analyzer's rule)."""
    p.add_argument(
        "--stability",
        type=argtypes.percent,
        default=None,
        metavar="PCT",
        help=f"keep each {per} measuring in windows until the last three agree on throughput and p99 within "
        f"PCT percent (max/min), bounded by its time cap; e.g. 10 (default: off)",
    )
    p.add_argument(
        "--stability-window",
        type=argtypes.duration_s,
        default=window_s,
        metavar="TIME",
        help=f"length of one --stability window, by request completion time (default {window_s:g}s)",
    )


def _add_sweep(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sweep",
        help="run one Locust load test per (batch size, encoding) cell and record every request",
        description="One headless Locust run per (batch size, encoding) cell against --host (or --docker IMAGE); "
        "every request goes to RUN/requests.csv, the report to RUN/report.html. Ends with what the run says: "
        "the best images/s per batch size within --slo (default: the run's own p99).",
    )
    p.add_argument("--host", default=None, action=Hosts, metavar="URL", help=f"{HOSTS_HELP} (or --docker)")
    add_wait_ready(p)
    p.add_argument(
        "--docker",
        default=None,
        metavar="IMAGE",
        help="instead of --host: start IMAGE (e.g. tensorflow/serving, tfsbench/serving-standin:local) "
        "for the sweep, record it in meta.json, stop it after",
    )
    p.add_argument(
        "--model-base-path",
        type=Path,
        default=None,
        metavar="DIR",
        help="--docker: model directory to mount (default models/MODEL_NAME)",
    )
    p.add_argument(
        "--cpus", type=argtypes.positive_float, default=None, metavar="N", help="--docker: container CPU limit"
    )
    p.add_argument("--memory", default=None, metavar="M", help="--docker: container memory limit, e.g. 2g")
    p.add_argument(
        "--docker-timeout",
        type=argtypes.duration_s,
        default=180.0,
        metavar="TIME",
        help="--docker: wait for AVAILABLE (default 180s)",
    )
    p.add_argument(
        "--batch-sizes", type=argtypes.int_list, default=[1, 4, 16], metavar="LIST", help="e.g. 1,4,64 (default 1,4,16)"
    )
    _add_encodings(p, ["row-orjson"])
    p.add_argument(
        "--users", type=argtypes.positive_int, default=4, metavar="N", help="concurrent users, closed model (default 4)"
    )
    p.add_argument(
        "--arrival", choices=("closed", "poisson", "constant"), default="closed", help="arrival model (default closed)"
    )
    p.add_argument(
        "--rate", type=argtypes.positive_float, default=None, metavar="REQ/S", help="total requests/s (open model)"
    )
    p.add_argument(
        "--duration",
        type=argtypes.duration_s,
        default=None,
        metavar="TIME",
        help="per cell, e.g. 30s (default 30s; with --requests: a 10m cap)",
    )
    p.add_argument(
        "--requests",
        type=argtypes.positive_int,
        default=None,
        metavar="N",
        help="each cell sends N requests, then ends (closed model; with --processes P up to P-1 more)",
    )
    p.add_argument(
        "--warmup",
        type=argtypes.non_negative_int,
        default=0,
        metavar="N",
        help="warm-up requests per user per cell, sent but not recorded (default 0)",
    )
    p.add_argument(
        "--processes",
        type=argtypes.positive_int,
        default=1,
        metavar="P",
        help="Locust processes per cell (--processes; default 1)",
    )
    _add_worker_options(p, "cell")
    _add_stability(p, "cell", 5.0)
    _add_scenario_options(p, per="cell")
    p.add_argument(
        "--metrics-path",
        default=PROMETHEUS_PATH,
        metavar="PATH",
        help="Prometheus path to scrape around each cell, if served",
    )
    p.add_argument(
        "--server-kind",
        default=None,
        metavar="KIND",
        help="record the target as KIND (e.g. tensorflow-serving) when its Server header does not say",
    )
    p.add_argument(
        "--slo",
        type=argtypes.slo,
        default=None,
        metavar="SLO",
        help="e.g. 'p99<50ms': the closing lines name the most images/s per batch size within it "
        "(default: none, every cell without errors, with its p99)",
    )
    p.add_argument("--no-report", dest="report", action="store_false", help="skip building report.html at the end")
    p.add_argument("--out", type=Path, default=Path("runs"), metavar="DIR", help="runs directory (default runs)")
    p.set_defaults(handler=_handler("bench.commands.sweep", "run_sweep"))


def _add_report(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("report", help="build report.html and figures/*.png for a run")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="e.g. runs/latest")
    p.set_defaults(handler=_handler("bench.commands.report", "run_report"))


def _add_compare(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("compare", help="compare the same cells of two runs")
    p.add_argument("run_a", type=Path, metavar="RUN_A", help="baseline run directory")
    p.add_argument("run_b", type=Path, metavar="RUN_B", help="candidate run directory")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="where compare.html/.csv and overlay PNGs go (default RUN_B/compare-<A's run id>)",
    )
    p.set_defaults(handler=_handler("bench.commands.report", "run_compare"))


def _add_capacity(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "capacity",
        help="find the highest load one replica serves within a latency SLO",
        description="For each (batch size, encoding): a short closed run finds the throughput ceiling, then "
        "open-model probes at fixed request rates (bracket from there, then bisect) find the highest rate whose "
        "latency percentile, counted from each request's intended send time, meets the SLO with no errors and "
        "every due send answered on schedule. The answer says what limited it (slo, errors, server-saturation, "
        "generator, max-rate, max-probes). Writes capacity.csv, probes.csv, requests.csv, meta.json and "
        "report.html into a new run directory.",
    )
    p.add_argument("--host", default=None, action=Hosts, metavar="URL", help=f"{HOSTS_HELP} (or --replicas)")
    add_wait_ready(p)
    add_replicas_arguments(p)
    p.add_argument(
        "--slo", type=argtypes.slo, default=(99.0, 100.0), metavar="SLO", help="e.g. 'p95<50ms' (default p99<100ms)"
    )
    p.add_argument(
        "--batch-sizes", type=argtypes.int_list, default=[1, 4, 16], metavar="LIST", help="e.g. 1,4,64 (default 1,4,16)"
    )
    _add_encodings(p, ["row-orjson"])
    p.add_argument(
        "--arrival", choices=("constant", "poisson"), default="constant", help="open-model arrivals (default constant)"
    )
    p.add_argument(
        "--target",
        type=argtypes.images_per_s,
        default=None,
        metavar="LOAD",
        help="e.g. 2000img/s: report replicas needed",
    )
    p.add_argument(
        "--headroom", type=argtypes.fraction, default=0.3, metavar="F", help="spare capacity per replica (default 0.3)"
    )
    p.add_argument(
        "--start-rate",
        type=argtypes.positive_float,
        default=10.0,
        metavar="REQ/S",
        help="first probe's rate without a calibration (default 10)",
    )
    p.add_argument(
        "--growth",
        type=argtypes.positive_float,
        default=2.0,
        metavar="X",
        help="step-up factor between probes (default 2)",
    )
    p.add_argument(
        "--tolerance",
        type=argtypes.positive_float,
        default=DEFAULT_TOLERANCE,
        metavar="F",
        help=f"stop bisecting when pass and fail rates are this close (default {DEFAULT_TOLERANCE:g})",
    )
    p.add_argument(
        "--max-probes", type=argtypes.positive_int, default=12, metavar="N", help="probes per cell at most (default 12)"
    )
    p.add_argument(
        "--max-rate",
        type=argtypes.positive_float,
        default=5000.0,
        metavar="REQ/S",
        help="the highest rate probed; when it passes, the answer is 'at least this' (default 5000)",
    )
    p.add_argument(
        "--min-samples",
        type=argtypes.positive_int,
        default=None,
        metavar="N",
        help="requests per probe for the percentile, within --max-probe-time (default 400 constant: the fewest "
        "that bound a p99 from above at 95 %%; 1000 poisson: its bursts make a shorter p99 wander)",
    )
    p.add_argument(
        "--max-probe-time",
        type=argtypes.duration_s,
        default=20.0,
        metavar="TIME",
        help="longest probe, Locust start-up and warm-up included (default 20s)",
    )
    p.add_argument(
        "--min-measure-time",
        type=argtypes.duration_s,
        default=3.0,
        metavar="TIME",
        help="each probe measures at least this long after its warm-up, within --max-probe-time (default 3s)",
    )
    p.add_argument(
        "--warmup-time",
        type=argtypes.duration_s,
        default=1.0,
        metavar="TIME",
        help="start of each probe left out of its numbers (default 1s)",
    )
    p.add_argument(
        "--max-users",
        type=argtypes.positive_int,
        default=256,
        metavar="N",
        help="Locust users per probe at most (default 256)",
    )
    p.add_argument(
        "--processes",
        type=argtypes.positive_int,
        default=1,
        metavar="P",
        help="Locust processes per probe, when one cannot drive the rates searched (default 1; at most one per core)",
    )
    _add_worker_options(p, "probe")
    p.add_argument(
        "--calibration-time",
        type=argtypes.non_negative_duration_s,
        default=3.0,
        metavar="TIME",
        help="per cell, a closed-model run this long (after --warmup-time) finds the throughput ceiling the "
        "search starts from; 0: no calibration, step up from --start-rate (default 3s)",
    )
    p.add_argument(
        "--calibration-users",
        type=argtypes.positive_int,
        default=8,
        metavar="N",
        help="users of the calibration run: enough to keep the server busy (default 8)",
    )
    _add_stability(p, "probe", 2.0)
    _add_scenario_options(p, per="probe")
    p.add_argument("--no-report", dest="report", action="store_false", help="skip building report.html at the end")
    p.add_argument("--out", type=Path, default=Path("runs"), metavar="DIR", help="runs directory (default runs)")
    p.set_defaults(handler=_handler("bench.commands.scaling", "run"))


def _add_inspect(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("inspect", help="show a served model's signatures, the encodings that apply, payload bytes")
    p.add_argument("--host", required=True, metavar="URL", help="TF Serving REST endpoint, e.g. http://127.0.0.1:8501")
    p.add_argument("--model-name", default="classifier", metavar="NAME", help="served model name (default classifier)")
    p.add_argument("--model-version", type=argtypes.positive_int, default=None, metavar="N", help="address /versions/N")
    p.add_argument("--signature-name", default="", metavar="NAME", help="only this signature (default: all)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    add_input_arguments(p)
    p.set_defaults(handler=_handler("bench.commands.inspect", "run_inspect"))


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="export -> serve -> short sweep -> report, on the embedded server")
    p.add_argument(
        "--models", type=Path, default=Path("models"), metavar="DIR", help="models directory (default models)"
    )
    p.add_argument("--out", type=Path, default=Path("runs"), metavar="DIR", help="runs directory (default runs)")
    p.add_argument(
        "--batch-sizes", type=argtypes.int_list, default=[1, 4, 16, 64], metavar="LIST", help="default 1,4,16,64"
    )
    _add_encodings(p, ["row-orjson", "row-fast", "b64-png", "grpc-tensor-content"])  # REST and gRPC side by side
    p.add_argument("--users", type=argtypes.positive_int, default=4, metavar="N", help="concurrent users (default 4)")
    p.add_argument(
        "--requests",
        type=argtypes.positive_int,
        default=300,
        metavar="N",
        help="a cell ends after N recorded requests (default 300) ...",
    )
    p.add_argument(
        "--duration",
        type=argtypes.duration_s,
        default=20.0,
        metavar="TIME",
        help="... or after TIME, whichever comes first (default 20s: about 2 minutes in all)",
    )
    p.set_defaults(handler=_handler("bench.commands.demo", "run_demo"))


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = ArgParser(
        prog="tfsbench",
        description="Benchmark and load-test image models served through the TensorFlow Serving REST API.",
        epilog="Workflow: tfsbench export -> tfsbench serve (or docker up) -> tfsbench sweep -> tfsbench report. "
        "Or all at once: tfsbench demo.",
    )
    parser.add_argument("--version", action="version", version=f"tfsbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (
        _add_export,
        _add_serve,
        partial(add_docker_parser, handler=_handler("bench.commands.docker", "run_docker")),
        _add_codecs,
        _add_sweep,
        _add_report,
        _add_compare,
        _add_capacity,
        _add_inspect,
        _add_demo,
    ):
        add(sub)
    add_tune_parser(sub, _handler("bench.commands.tune", "run_tune"))  # after capacity: it borrows its flags
    return parser


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    # TensorFlow's C++ start-up chatter hides our own output; keep its warnings and errors.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        # argparse reports a sub-command's unknown flag with the top-level usage; the sub-command's helps.
        subparser(parser, args.command).error(f"unrecognized arguments: {' '.join(extras)}")
    # A stopped CI job or `kill` gets the same care as Ctrl-C: what was recorded is kept.
    # (`serve` installs its own handler, which drains in-flight requests.)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        code: int = args.handler(args)
        return code
    except BenchError as exc:
        print(f"tfsbench {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"tfsbench {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `tfsbench compare A B | head` closed our stdout: not an error of ours. Point stdout at
        # /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        # Anything not already caught where it was written (a report's figures): one line.
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"tfsbench {args.command}: error: no space left on the device{where}", file=sys.stderr)
        return 1
