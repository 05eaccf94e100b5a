"""Typed validators for command-line values, shared by ``tfsbench`` and the Locust scenarios.

Each validator takes the raw string and returns the parsed value, or raises
``argparse.ArgumentTypeError`` with the bad value quoted, so argparse prints one line
and exits with code 2.
"""

from __future__ import annotations

import argparse
import re
from urllib.parse import urlsplit

from bench.api_names import GRPC_PORT

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def positive_int(text: str) -> int:
    """An integer > 0, e.g. ``16``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' must be a positive integer")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0, e.g. ``0``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"'{text}' must be zero or a positive integer")
    return value


def port(text: str) -> int:
    """A TCP port 0..65535 (0 asks the OS for a free one where the command allows it)."""
    value = non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"'{text}' is not a TCP port (0-65535)")
    return value


def positive_float(text: str) -> float:
    """A number > 0, e.g. ``2.5``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"'{text}' must be a positive number")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1), e.g. ``0.3`` for 30 % headroom."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' must be at least 0 and below 1")
    return value


def duration_s(text: str) -> float:
    """A duration such as ``30s``, ``2m``, ``1m30s``, ``500ms`` or plain seconds ``45``; returns seconds."""
    stripped = text.strip().lower()
    try:
        seconds = float(stripped)
    except ValueError:
        parts = _DURATION_PART.findall(stripped)
        if not parts or "".join(n + u for n, u in parts) != stripped:
            raise argparse.ArgumentTypeError(f"'{text}' is not a duration (examples: 30s, 2m, 1m30s, 500ms)") from None
        seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' must be a positive duration")
    return seconds


def non_negative_duration_s(text: str) -> float:
    """Like :func:`duration_s`, but ``0`` is allowed (it switches the step off)."""
    if text.strip() in ("0", "0s", "0.0"):
        return 0.0
    return duration_s(text)


def percent(text: str) -> float:
    """A percentage above 0, e.g. ``10`` or ``10%``; returns the number (10.0)."""
    stripped = text.strip().removesuffix("%")
    try:
        value = float(stripped)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a percentage (e.g. 10 or 10%)") from None
    if not 0 < value < 1000:
        raise argparse.ArgumentTypeError(f"'{text}' must be a percentage above 0, e.g. 10")
    return value


def int_list(text: str) -> list[int]:
    """Comma-separated positive integers, e.g. ``1,4,16``; keeps order, drops duplicates."""
    values: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise argparse.ArgumentTypeError(f"'{text}' has an empty item (expected e.g. 1,4,16)")
        value = positive_int(item)
        if value not in values:
            values.append(value)
    return values


def weighted_int_list(text: str) -> list[tuple[int, int]]:
    """Batch sizes with optional weights: ``1,16`` or ``1:3,16:1``; returns ``[(value, weight), ...]``."""
    pairs: list[tuple[int, int]] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise argparse.ArgumentTypeError(f"'{text}' has an empty item (expected e.g. 1,16 or 1:3,16:1)")
        value_text, _, weight_text = item.partition(":")
        pairs.append((positive_int(value_text), positive_int(weight_text) if weight_text else 1))
    return pairs


def name_list(text: str) -> list[str]:
    """Comma-separated names, e.g. ``row-orjson,b64-png``."""
    names = [item.strip() for item in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"'{text}' has an empty item")
    return list(dict.fromkeys(names))


_SLO = re.compile(r"^\s*p(\d+(?:\.\d+)?)\s*<\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*$")


def slo(text: str) -> tuple[float, float]:
    """A latency objective ``p99<100ms``; returns ``(percentile, limit_ms)``."""
    match = _SLO.match(text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"'{text}' is not an SLO (expected e.g. p99<100ms or p95<0.5s)")
    percentile, limit, unit = float(match[1]), float(match[2]), match[3]
    if not 0 < percentile < 100 or limit <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' needs a percentile in (0, 100) and a positive limit")
    return percentile, limit * (1000.0 if unit == "s" else 1.0)


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(img/s|images/s|req/s|rps)?\s*$")


def images_per_s(text: str) -> float:
    """A target load in images per second: ``2000img/s`` or ``2000``."""
    match = _RATE.match(text.lower())
    if not match or match[2] in ("req/s", "rps") or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a load in images/s (expected e.g. 2000img/s)")
    return float(match[1])


def grpc_target(text: str) -> str:
    """``HOST:PORT`` of a gRPC server, e.g. ``127.0.0.1:8500`` or ``[::1]:8500`` (no scheme, no path)."""
    value = text.strip()
    host, sep, port_text = value.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    if not sep or not host or "/" in value or (":" in host and not bracketed):
        raise argparse.ArgumentTypeError(f"'{text}' is not HOST:PORT, e.g. 127.0.0.1:8500 (gRPC takes no scheme)")
    if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise argparse.ArgumentTypeError(f"'{text}': the port must be 1-65535")
    return value


def default_grpc_target(rest_url: str, grpc_port: int = GRPC_PORT) -> str:
    """The gRPC target beside a REST root URL: its host with tensorflow_model_server's ``--port`` default."""
    host = urlsplit(rest_url).hostname or "127.0.0.1"
    return f"[{host}]:{grpc_port}" if ":" in host else f"{host}:{grpc_port}"
