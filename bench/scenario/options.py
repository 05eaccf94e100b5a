"""The predict scenario's options (``locustfiles/predict.py``), parsed into a :class:`ScenarioConfig`.

:func:`add_arguments` registers them on Locust's parser (also in the web UI and as
``TFSBENCH_<NAME>`` variables); :func:`config_from_options` checks Locust's parsed values and
turns bad input into one ConfigError line. No Locust import here, so the options can be
parsed and tested anywhere.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import argtypes
from bench.errors import ConfigError
from bench.payloads.encodings import ENCODING_NAMES, get_encoding
from bench.scenario.schedule import Arrival, parse_arrival

ENV_PREFIX = "TFSBENCH_"


def _validated(parse: Callable[[str], Any]) -> Callable[[str], str]:
    """An argparse type that validates with ``parse`` but keeps the text.

    Locust's web UI writes form values back into the options converting them to the type
    already there, so keeping every custom option as text makes the UI and the CLI agree.
    """

    def check(text: str) -> str:
        if text.strip():
            parse(text)
        return text

    check.__name__ = getattr(parse, "__name__", "value")
    return check


def add_arguments(parser: Any) -> None:
    """Register the scenario's options on Locust's parser (``events.init_command_line_parser``).

    Names follow the tfsbench CLI contract; each can also come from ``TFSBENCH_<NAME>``.
    """
    group = parser.add_argument_group("tfsbench predict scenario")

    def add(flag: str, help_text: str, **kwargs: Any) -> None:
        env = ENV_PREFIX + flag.lstrip("-").upper().replace("-", "_")
        action = group.add_argument(flag, env_var=env, help=f"{help_text} [env {env}]", **kwargs)
        # A group's add_argument is argparse's own, which skips the attributes that
        # LocustArgumentParser.add_argument sets to put an option in the web UI's form.
        action.include_in_web_ui = True
        action.is_secret = action.is_required = action.is_multiple = False

    add("--model-name", "served model name (default: classifier)", default="classifier", metavar="NAME")
    add(
        "--model-version",
        "model version to address (/versions/N); empty = the latest the server serves",
        default="",
        metavar="N",
        type=_validated(argtypes.positive_int),
    )
    add(
        "--signature-name",
        "signature to call; empty = the encoding's own (serving_default, or serving_bytes for b64-*)",
        default="",
        metavar="NAME",
    )
    add(
        "--batch-sizes",
        "images per request: one size, a list (1,16) or weighted (1:3,16:1) (default: 1)",
        default="1",
        metavar="LIST",
        type=_validated(argtypes.weighted_int_list),
    )
    add(
        "--encodings",
        f"payload encodings, comma-separated, from: {', '.join(ENCODING_NAMES)} (default: row-orjson)",
        default="row-orjson",
        metavar="LIST",
        type=_validated(argtypes.name_list),
    )
    add(
        "--grpc-target",
        "HOST:PORT of the PredictionService the grpc-* encodings go to; empty = --host's host, port 8500 "
        "(tensorflow_model_server's --port)",
        default="",
        metavar="HOST:PORT",
        type=_validated(argtypes.grpc_target),
    )
    add("--images", "directory of images to send; empty = synthetic images", default="", metavar="DIR")
    add(
        "--pool-size",
        "distinct pre-encoded bodies per (batch, encoding) (default: 8)",
        default="8",
        metavar="N",
        type=_validated(argtypes.positive_int),
    )
    add(
        "--warmup",
        "warm-up requests per user before measuring; sent, never recorded, counted apart (default: 0)",
        default="0",
        metavar="N",
        type=_validated(argtypes.non_negative_int),
    )
    add(
        "--arrival",
        "arrival model, one of closed (each user sends back to back), poisson or constant (open model at "
        "Rate requests/s) (default: closed)",
        default="closed",
        choices=["closed", "poisson", "constant"],
    )
    add(
        "--rate",
        "requests/s of the open model (Arrival poisson or constant), all users together; empty with closed",
        default="",
        metavar="REQ_PER_S",
        type=_validated(argtypes.positive_float),
    )
    add(
        "--think-time",
        "seconds each user waits between a reply and its next send, closed model (default: 0)",
        default="0",
        metavar="SECONDS",
    )
    add(
        "--max-requests",
        "stop after N requests (warm-up not counted; each of P processes sends its share); empty = no limit",
        default="",
        metavar="N",
        type=_validated(argtypes.positive_int),
    )
    add("--records", "per-request CSV (requests.csv columns); empty = no records", default="", metavar="PATH")
    add(
        "--records-batch-rows",
        "a worker sends its records to the master in batches of at most N rows (default: 200)",
        default="200",
        metavar="N",
        type=_validated(argtypes.positive_int),
    )
    add(
        "--records-batch-s",
        "... and after at most this many seconds (default: 0.25)",
        default="0.25",
        metavar="SECONDS",
        type=_validated(argtypes.positive_float),
    )
    add(
        "--keep-workers",
        "master: at the end detach the workers instead of quitting them; they join the next master on "
        "the same port (tfsbench sweep/capacity --expect-workers)",
        action="store_true",
        default=False,
    )
    add("--cell", "label written to the records' cell column (default: locust)", default="locust", metavar="NAME")
    add(
        "--encode-inline",
        "encode each body inside the timed path (measures client encode cost) instead of a pre-encoded pool",
        action="store_true",
        default=False,
    )
    add(
        "--shape-steps",
        "unattended sweep: step through batch=1,4,16 or rate=10,20,40, one step per --step-time",
        default="",
        metavar="STEPS",
        type=_validated(lambda text: parse_steps(text)),
    )
    add(
        "--step-time",
        "length of each --shape-steps step (default: 30s)",
        default="30s",
        metavar="DURATION",
        type=_validated(argtypes.duration_s),
    )
    add(
        "--cpu-warn-pct",
        "client CPU warning: warn when this load generator uses more than this percent of one core over 5 s "
        "(default: 90)",
        default="90",
        metavar="PCT",
        type=_validated(argtypes.positive_float),
    )
    add(
        "--input-plan",
        "JSON file of each encoding's signature and input plan (tfsbench sweep writes RUN/input_plan.json), "
        "or that JSON inline (how it reaches remote workers), "
        "or 'auto': fill each encoding's signature as the target's metadata says, with the default fills; "
        "empty = the reference model's uint8 128x128x3 images",
        default="",
        metavar="FILE",
    )


@dataclass(frozen=True)
class Step:
    """One step of a ``--shape-steps`` sweep: a batch size or a total rate, and its cell label."""

    batch: int | None = None
    rate_per_s: float | None = None

    def label(self, base: str) -> str:
        return f"{base}/b={self.batch}" if self.batch is not None else f"{base}/rate={self.rate_per_s:g}"


# Locust's options that open a listening socket, and what they say about their default.
_LISTENERS = {
    "web_host": "Host to bind the web interface to. Defaults to 127.0.0.1 (loopback); '*' for all interfaces",
    "master_bind_host": "IP address for the master to listen on. Defaults to 127.0.0.1 (loopback); "
    "'*' for all interfaces, as workers on other machines need",
}


def bind_loopback_by_default(parser: Any) -> None:
    """Locust listens on every interface unless told otherwise; a load generator stays on loopback.

    Its web UI starts and stops load tests and its master port accepts any worker, so neither is
    offered to the network unless asked (``--web-host``, ``--master-bind-host``, their
    LOCUST_* variables or a config file, which all still win over these defaults).
    """
    parser.set_defaults(**dict.fromkeys(_LISTENERS, "127.0.0.1"))
    for action in parser._actions:  # argparse has no public way to reword another's help
        if action.dest in _LISTENERS:
            action.help = _LISTENERS[action.dest]


def parse_steps(text: str) -> tuple[Step, ...]:
    """``batch=1,4,16`` or ``rate=10,20,40`` -> steps; ConfigError / ArgumentTypeError otherwise."""
    text = text.strip()
    if not text:
        return ()
    key, sep, values = text.partition("=")
    key = key.strip().lower()
    if not sep or key not in ("batch", "rate"):
        raise argparse.ArgumentTypeError(f"'{text}' is not a step list (expected batch=1,4,16 or rate=10,20,40)")
    if key == "batch":
        return tuple(Step(batch=b) for b in argtypes.int_list(values))
    return tuple(Step(rate_per_s=argtypes.positive_float(v.strip())) for v in values.split(","))


@dataclass(frozen=True)
class ScenarioConfig:
    """The scenario's options, parsed and checked (see :func:`add_arguments` for meanings)."""

    model_name: str = "classifier"
    model_version: int | None = None
    signature_name: str = ""
    batches: tuple[tuple[int, int], ...] = ((1, 1),)  # (batch size, weight)
    encodings: tuple[str, ...] = ("row-orjson",)
    images_dir: Path | None = None
    pool_size: int = 8
    warmup: int = 0
    arrival: Arrival = field(default_factory=Arrival)
    records: Path | None = None
    cell: str = "locust"
    encode_inline: bool = False
    steps: tuple[Step, ...] = ()
    step_time_s: float = 30.0
    cpu_warn_pct: float = 90.0
    input_plan: Path | None = None  # bench.scenario.signature_inputs; Path("auto"): from the metadata
    host: str = ""  # Locust's --host, for --input-plan auto
    max_requests: int | None = None
    grpc_target: str = ""  # --grpc-target; "" = --host's host on port 8500

    @property
    def grpc_address(self) -> str:
        """Where the gRPC encodings go: ``--grpc-target``, else the REST host's host on port 8500."""
        # --host URL1,URL2 (replicas): the first one's host.
        return self.grpc_target or argtypes.default_grpc_target(self.host.split(",")[0] or "http://127.0.0.1")

    @property
    def protocols(self) -> tuple[str, ...]:
        """The protocols the encodings speak (``rest``, ``grpc``), in the encodings' order."""
        return tuple(dict.fromkeys(get_encoding(name).protocol for name in self.encodings))

    records_batch_rows: int = 200
    records_batch_s: float = 0.25
    keep_workers: bool = False

    @property
    def predict_path(self) -> str:
        version = f"/versions/{self.model_version}" if self.model_version is not None else ""
        return f"/v1/models/{self.model_name}{version}:predict"

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        sizes = [b for b, _ in self.batches] + [s.batch for s in self.steps if s.batch is not None]
        return tuple(dict.fromkeys(sizes))


def _arg(options: Any, name: str, default: Any = "") -> Any:
    value = getattr(options, name, default)
    return default if value is None else value


def config_from_options(options: Any) -> ScenarioConfig:
    """Build a :class:`ScenarioConfig` from Locust's parsed options (text values); ConfigError if bad."""

    def parsed(name: str, flag: str, parse: Callable[[str], Any]) -> Any:
        text = str(_arg(options, name)).strip()
        try:
            return parse(text)
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(f"{flag}: {exc}") from None

    model_name = str(_arg(options, "model_name", "classifier")).strip()
    if not model_name or "/" in model_name or ":" in model_name:
        raise ConfigError(f"--model-name: '{model_name}' is not a model name")
    version_text = str(_arg(options, "model_version")).strip()
    version = parsed("model_version", "--model-version", argtypes.positive_int) if version_text else None
    steps = parsed("shape_steps", "--shape-steps", parse_steps)
    arrival = parse_arrival(
        str(_arg(options, "arrival", "closed")), _arg(options, "rate", None), _arg(options, "think_time", 0)
    )
    if any(s.rate_per_s is not None for s in steps) and not arrival.is_open:
        raise ConfigError("--shape-steps rate=... needs an open model (--arrival constant or poisson, and a --rate)")
    encodings = tuple(parsed("encodings", "--encodings", argtypes.name_list))
    for name in encodings:
        get_encoding(name)  # ConfigError naming the valid encodings
    images = str(_arg(options, "images")).strip()
    if images and not Path(images).is_dir():
        raise ConfigError(f"--images: '{images}' is not a directory")
    records = str(_arg(options, "records")).strip()
    input_plan = str(_arg(options, "input_plan")).strip()
    if input_plan and input_plan != "auto" and not input_plan.startswith("{") and not Path(input_plan).is_file():
        raise ConfigError(f"--input-plan: '{input_plan}' is not a file (or 'auto')")
    max_text = str(_arg(options, "max_requests")).strip()
    grpc_text = str(_arg(options, "grpc_target")).strip()
    return ScenarioConfig(
        max_requests=parsed("max_requests", "--max-requests", argtypes.positive_int) if max_text else None,
        model_name=model_name,
        model_version=version,
        signature_name=str(_arg(options, "signature_name")).strip(),
        batches=tuple(parsed("batch_sizes", "--batch-sizes", argtypes.weighted_int_list)),
        encodings=encodings,
        images_dir=Path(images) if images else None,
        pool_size=parsed("pool_size", "--pool-size", argtypes.positive_int),
        warmup=parsed("warmup", "--warmup", argtypes.non_negative_int),
        arrival=arrival,
        records=Path(records) if records else None,
        cell=str(_arg(options, "cell", "locust")).strip() or "locust",
        encode_inline=bool(_arg(options, "encode_inline", False)),
        steps=steps,
        step_time_s=parsed("step_time", "--step-time", argtypes.duration_s),
        cpu_warn_pct=parsed("cpu_warn_pct", "--cpu-warn-pct", argtypes.positive_float),
        input_plan=Path(input_plan) if input_plan else None,
        host=str(_arg(options, "host")).strip(),
        grpc_target=parsed("grpc_target", "--grpc-target", argtypes.grpc_target) if grpc_text else "",
        records_batch_rows=parsed("records_batch_rows", "--records-batch-rows", argtypes.positive_int)
        if str(_arg(options, "records_batch_rows")).strip()
        else 200,
        records_batch_s=parsed("records_batch_s", "--records-batch-s", argtypes.positive_float)
        if str(_arg(options, "records_batch_s")).strip()
        else 0.25,
        keep_workers=bool(_arg(options, "keep_workers", False)),
    )
