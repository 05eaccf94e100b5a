"""Is a predict response a good one? The check every Locust request of the scenario goes through."""

from __future__ import annotations

from typing import Any

import orjson


def check_predict_response(status: int, body: bytes, batch: int) -> str:
    """The failure message for a predict response, or "" when it is a good one.

    Non-200 -> ``HTTP <status>: <the server's error text>``; a 200 whose body is not JSON or
    whose prediction count differs from the batch size -> a message saying so.
    """
    if status != 200:
        message = ""
        try:
            parsed = orjson.loads(body) if body else None
            if isinstance(parsed, dict) and "error" in parsed:
                message = str(parsed["error"])
        except orjson.JSONDecodeError:
            pass
        if not message:
            message = body[:200].decode("utf-8", "replace").strip() or "(empty body)"
        return f"HTTP {status}: {message}"
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return f"response is not JSON: {exc}"
    count = prediction_count(parsed)
    if count is None:
        return "response has neither 'predictions' nor 'outputs'"
    if count != batch:
        return f"expected {batch} predictions, got {count}"
    return ""


def prediction_count(parsed: Any) -> int | None:
    """Rows in a predict response: ``predictions`` (row format) or ``outputs`` (columnar)."""
    if not isinstance(parsed, dict):
        return None
    if isinstance(parsed.get("predictions"), list):
        return len(parsed["predictions"])
    outputs = parsed.get("outputs")
    if isinstance(outputs, list):
        return len(outputs)
    if isinstance(outputs, dict) and outputs:
        first = next(iter(outputs.values()))
        return len(first) if isinstance(first, list) else None
    return None
