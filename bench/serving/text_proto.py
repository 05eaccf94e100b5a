"""Protobuf text format, just enough for ModelServerConfig, BatchingParameters and MonitoringConfig.

``parse_text_proto(text)`` -> ``{field: [values]}`` with nested messages as dicts; no schema, so
each config reader checks the fields it uses.
"""

from __future__ import annotations

import re
from typing import Any

from bench.errors import ConfigError

__all__ = ["parse_text_proto"]

_TOKEN = re.compile(
    r"""\s*(?:(\#[^\n]*)|("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')|([A-Za-z_][\w.]*)|([-+]?[\d.][\w.+-]*)|([{}<>:;,\[\]]))""",
)


def parse_text_proto(text: str, source: str = "config") -> dict[str, list[Any]]:
    """Parse protobuf text format into ``{field: [values]}`` (messages become nested dicts).

    Raises ``ConfigError`` naming ``source`` and the position for malformed text.
    """
    tokens: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            if text[pos:].strip() == "":
                break
            raise ConfigError(f"{source}: cannot parse text proto near {text[pos : pos + 20]!r}")
        pos = match.end()
        if match.group(1):
            continue
        for kind, group in (("str", 2), ("ident", 3), ("num", 4), ("punct", 5)):
            if match.group(group) is not None:
                tokens.append((kind, match.group(group), match.start(group)))
                break

    def parse_message(i: int, closing: str | None) -> tuple[dict[str, list[Any]], int]:
        message: dict[str, list[Any]] = {}
        while i < len(tokens):
            kind, value, at = tokens[i]
            if kind == "punct" and value in ("}", ">"):
                if closing is None:
                    raise ConfigError(f"{source}: unexpected '{value}' at offset {at}")
                return message, i + 1
            if kind == "punct" and value in (";", ","):
                i += 1
                continue
            if kind != "ident":
                raise ConfigError(f"{source}: expected a field name at offset {at}, got {value!r}")
            name = value
            i += 1
            if i < len(tokens) and tokens[i][1] == ":":
                i += 1
            if i >= len(tokens):
                raise ConfigError(f"{source}: field '{name}' has no value")
            kind, value, at = tokens[i]
            if value in ("{", "<"):
                sub, i = parse_message(i + 1, "}" if value == "{" else ">")
                message.setdefault(name, []).append(sub)
            elif kind == "str":
                message.setdefault(name, []).append(_unquote(value))
                i += 1
            elif kind == "num":
                message.setdefault(name, []).append(_number(value, source, name))
                i += 1
            elif kind == "ident":
                message.setdefault(name, []).append({"true": True, "false": False}.get(value.lower(), value))
                i += 1
            else:
                raise ConfigError(f"{source}: bad value for '{name}' at offset {at}")
        if closing is not None:
            raise ConfigError(f"{source}: missing '{closing}'")
        return message, i

    message, _ = parse_message(0, None)
    return message


def _unquote(text: str) -> str:
    body = text[1:-1]
    return body.encode("latin-1", "backslashreplace").decode("unicode_escape") if "\\" in body else body


def _number(text: str, source: str, name: str) -> int | float:
    try:
        return int(text, 0)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{source}: '{name}' has a bad number {text!r}") from None
