"""Parse and print JSON the way tensorflow/serving's rapidjson does, for exact error texts.

tensorflow/serving parses request bodies with rapidjson (iterative parser, ``NaN``/``Infinity``
literals allowed, stop after the first complete value) and quotes JSON values in its error
messages with rapidjson's pretty writer (4-space indent, arrays on one line, cut off once 256
bytes are written). Clients match on those texts, so this module reproduces both:

* ``loads(body)`` returns the Python value (orjson first, because it is ~50x faster; this
  module's own parser only runs for bodies orjson refuses, to accept what rapidjson accepts and
  to name rapidjson's error and byte offset for the rest). orjson keeps the *last* of duplicate
  keys, rapidjson the first: a document that holds as many keys as it has ``:`` bytes dropped
  none (the common case, found with ``find``); otherwise the standard library's C parser reads
  it again with the first key kept;
* ``debug_string(value)`` renders a value like ``JsonValueToDebugString``.

Values: ``dict`` (first duplicate key wins, as rapidjson's ``FindMember``), ``list``, ``str``
(bytes that are not UTF-8 kept via ``surrogateescape``), ``int`` (rapidjson Int/Uint/Int64/Uint64),
``float`` (rapidjson Double, including integers beyond 64 bits), ``bool``, ``None``.
"""

from __future__ import annotations

import json
import math
from collections import deque
from decimal import Decimal
from typing import Any

import orjson

__all__ = ["JsonParseError", "debug_string", "format_rapidjson_double", "json_type_name", "loads"]

DEBUG_STRING_LIMIT_BYTES = 256

_MESSAGES = {
    "empty": "The document is empty.",
    "value": "Invalid value.",
    "miss_name": "Missing a name for object member.",
    "miss_colon": "Missing a colon after a name of object member.",
    "miss_comma_curly": "Missing a comma or '}' after an object member.",
    "miss_comma_square": "Missing a comma or ']' after an array element.",
    "hex": "Incorrect hex digit after \\u escape in string.",
    "surrogate": "The surrogate pair in string is invalid.",
    "escape": "Invalid escape character in string.",
    "quote": "Missing a closing quotation mark in string.",
    "encoding": "Invalid encoding in string.",
    "too_big": "Number too big to be stored in double.",
    "fraction": "Miss fraction part in number.",
    "exponent": "Miss exponent in number.",
}


class JsonParseError(ValueError):
    """rapidjson's parse error: ``str(exc)`` is ``"<English message> at offset: <byte offset>"``."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} at offset: {offset}")
        self.message = message
        self.offset = offset


def loads(body: bytes | bytearray) -> object:
    """Parse ``body`` (non-empty) as tensorflow/serving does; raises ``JsonParseError``."""
    try:
        return _first_key_wins(orjson.loads(body), body)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("unexpected content after document"):
            # rapidjson stops after the first value; reparse just that prefix with orjson.
            end = exc.pos if body.isascii() else len(body.decode("utf-8", "surrogateescape")[: exc.pos].encode())
            try:
                return _first_key_wins(orjson.loads(body[:end]), body[:end])
            except orjson.JSONDecodeError:
                pass
    return _Parser(body).parse()


# Containers looked at for the key count before reading the document again (a ``:`` in a string
# value makes the count inconclusive; past this many containers that is the cheaper way).
_KEY_SCAN_LIMIT = 4096


def _first_key_wins(doc: object, text: bytes | bytearray) -> object:
    """``doc`` (orjson's parse of ``text``) if no object in it had a duplicate key, else ``text``
    parsed again keeping the first of each duplicate, as rapidjson's ``FindMember`` finds it.

    Every member of an object has exactly one ``:`` after its key, so once the objects seen hold
    as many keys as ``text`` has ``:`` bytes, none was lost to a duplicate. Both counts grow
    together and stop there: the keys breadth first (a predict body has one to a batch's worth,
    near the top), the colons with ``find`` (memchr: one scan of the body in all, about 20 us
    per MB). More colons than keys means a duplicate or a ``:`` inside a string; the C parser of
    the standard library then decides, and for documents orjson accepts it gives the same values.
    """
    colons = _Colons(text)
    kept = 0
    queue: deque[object] = deque([doc])
    for _ in range(_KEY_SCAN_LIMIT):
        if not colons.more_than(kept):
            return doc
        if not queue:
            break
        node = queue.popleft()
        if isinstance(node, dict):
            kept += len(node)
            queue.extend(v for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            queue.extend(v for v in node if isinstance(v, dict | list))
    if not colons.more_than(kept):
        return doc
    try:
        return json.loads(bytes(text), object_pairs_hook=_keep_first)
    except (RecursionError, ValueError):
        # Nested past the standard library's recursion limit, or an integer of more than 4300
        # digits: this module's iterative parser reads it (and keeps the first key too).
        return _Parser(text).parse()


class _Colons:
    """Counts the ``:`` bytes of a text lazily, only as far as a question needs."""

    def __init__(self, text: bytes | bytearray) -> None:
        self.text = text
        self.seen = 0
        self.pos = -1
        self.done = False

    def more_than(self, n: int) -> bool:
        while self.seen <= n and not self.done:
            self.pos = self.text.find(b":", self.pos + 1)
            if self.pos < 0:
                self.done = True
            else:
                self.seen += 1
        return self.seen > n


def _keep_first(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        out.setdefault(key, value)
    return out


_WS = frozenset(b" \t\n\r")
_ESCAPES = {
    ord('"'): '"',
    ord("\\"): "\\",
    ord("/"): "/",
    ord("b"): "\b",
    ord("f"): "\f",
    ord("n"): "\n",
    ord("r"): "\r",
    ord("t"): "\t",
}
_HEX = frozenset(b"0123456789abcdefABCDEF")
_DIGITS = frozenset(b"0123456789")

# Iterative parser states (rapidjson's IterativeParsingState names).
_START, _FINISH, _OBJ_INIT, _MEMBER_KEY, _KV_DELIM, _MEMBER_VALUE, _MEMBER_DELIM = range(7)
_ARR_INIT, _ELEMENT, _ELEM_DELIM = range(7, 10)


class _Parser:
    """A port of rapidjson's iterative parser (kParseIterativeFlag | NanAndInf | StopWhenDone)."""

    def __init__(self, body: bytes | bytearray) -> None:
        self.b = body
        self.n = len(body)
        self.i = 0
        # rapidjson's UTF-8 input stream skips a byte order mark (offsets still count it).
        if body.startswith(b"\xef\xbb\xbf"):
            self.i = 3

    def peek(self) -> int:
        return self.b[self.i] if self.i < self.n else 0

    def error(self, kind: str, offset: int) -> JsonParseError:
        return JsonParseError(_MESSAGES[kind], offset)

    def skip_ws(self) -> None:
        b, n, i = self.b, self.n, self.i
        while i < n and b[i] in _WS:
            i += 1
        self.i = i

    def handle_error(self, state: int) -> JsonParseError:
        kind = {
            _START: "empty",
            _FINISH: "empty",  # unreachable with StopWhenDone
            _OBJ_INIT: "miss_name",
            _MEMBER_DELIM: "miss_name",
            _MEMBER_KEY: "miss_colon",
            _MEMBER_VALUE: "miss_comma_curly",
            _KV_DELIM: "value",
            _ARR_INIT: "value",
            _ELEM_DELIM: "value",
        }.get(state, "miss_comma_square")
        return self.error(kind, self.i)

    def parse(self) -> object:
        state = _START
        # Stack of open containers: (container, pending key or None, is_object).
        stack: list[list[Any]] = []
        root: object = None
        self.skip_ws()
        while self.peek() != 0:
            c = self.peek()
            if state in (_START, _KV_DELIM, _ARR_INIT, _ELEM_DELIM):
                if c == ord("]") and state == _ARR_INIT:
                    self.i += 1
                    state, root = self._add(stack, stack.pop()[0])
                elif c == ord("[") or c == ord("{"):
                    self.i += 1
                    container: object = [] if c == ord("[") else {}
                    stack.append([container, None])
                    state = _ARR_INIT if c == ord("[") else _OBJ_INIT
                elif c in (ord("]"), ord("}"), ord(":"), ord(",")):
                    raise self.handle_error(state)
                else:
                    state, root = self._add(stack, self.parse_value())
            elif state in (_OBJ_INIT, _MEMBER_DELIM):
                if c == ord('"'):
                    stack[-1][1] = self.parse_string()
                    state = _MEMBER_KEY
                elif c == ord("}") and state == _OBJ_INIT:
                    self.i += 1
                    state, root = self._add(stack, stack.pop()[0])
                else:
                    raise self.handle_error(state)
            elif state == _MEMBER_KEY:
                if c != ord(":"):
                    raise self.handle_error(state)
                self.i += 1
                state = _KV_DELIM
            elif state == _MEMBER_VALUE:
                if c == ord(","):
                    self.i += 1
                    state = _MEMBER_DELIM
                elif c == ord("}"):
                    self.i += 1
                    state, root = self._add(stack, stack.pop()[0])
                else:
                    raise self.handle_error(state)
            elif state == _ELEMENT:
                if c == ord(","):
                    self.i += 1
                    state = _ELEM_DELIM
                elif c == ord("]"):
                    self.i += 1
                    state, root = self._add(stack, stack.pop()[0])
                else:
                    raise self.handle_error(state)
            if state == _FINISH:
                return root
            self.skip_ws()
        raise self.handle_error(state)

    @staticmethod
    def _add(stack: list[list[Any]], value: object) -> tuple[int, object]:
        """Hand a finished value to the open container (or finish the document with it)."""
        if not stack:
            return _FINISH, value
        top = stack[-1]
        container = top[0]
        if isinstance(container, list):
            container.append(value)
            return _ELEMENT, None
        key = top[1]
        if key not in container:  # first duplicate wins, as rapidjson's FindMember
            container[key] = value
        return _MEMBER_VALUE, None

    # -- scalar values ---------------------------------------------------------------------

    def parse_value(self) -> object:
        c = self.peek()
        if c == ord('"'):
            return self.parse_string()
        if c in (ord("n"), ord("t"), ord("f")):
            word, value = {ord("n"): (b"null", None), ord("t"): (b"true", True), ord("f"): (b"false", False)}[c]
            self.i += 1
            for expected in word[1:]:
                if self.peek() != expected:
                    raise self.error("value", self.i)
                self.i += 1
            return value
        return self.parse_number()

    def parse_string(self) -> str:
        b = self.b
        self.i += 1  # opening quote
        out = bytearray()
        while True:
            c = self.peek()
            if c == ord("\\"):
                escape_offset = self.i
                self.i += 1
                e = self.peek()
                if e in _ESCAPES:
                    self.i += 1
                    out += _ESCAPES[e].encode()
                elif e == ord("u"):
                    self.i += 1
                    cp = self._hex4(escape_offset)
                    if 0xD800 <= cp <= 0xDFFF:
                        if cp > 0xDBFF:
                            raise self.error("surrogate", escape_offset)
                        if self.peek() != ord("\\"):
                            raise self.error("surrogate", escape_offset)
                        self.i += 1
                        if self.peek() != ord("u"):
                            raise self.error("surrogate", escape_offset)
                        self.i += 1
                        cp2 = self._hex4(escape_offset)
                        if not 0xDC00 <= cp2 <= 0xDFFF:
                            raise self.error("surrogate", escape_offset)
                        cp = (((cp - 0xD800) << 10) | (cp2 - 0xDC00)) + 0x10000
                    out += chr(cp).encode()
                else:
                    raise self.error("escape", escape_offset)
            elif c == ord('"'):
                self.i += 1
                return out.decode("utf-8", "surrogateescape")
            elif c < 0x20:
                raise self.error("quote" if c == 0 else "encoding", self.i)
            else:
                # Copy a run of plain bytes at once (rapidjson copies without validating UTF-8).
                j = self.i
                while j < self.n and b[j] >= 0x20 and b[j] not in (0x22, 0x5C):
                    j += 1
                out += b[self.i : j]
                self.i = j

    def _hex4(self, escape_offset: int) -> int:
        cp = 0
        for _ in range(4):
            c = self.peek()
            if c not in _HEX:
                raise self.error("hex", escape_offset)
            cp = cp * 16 + int(chr(c), 16)
            self.i += 1
        return cp

    def parse_number(self) -> int | float:
        b = self.b
        start = self.i
        minus = self.peek() == ord("-")
        if minus:
            self.i += 1
        c = self.peek()
        if c == ord("N") or c == ord("I"):
            return self._nan_inf(minus)
        if c not in _DIGITS:
            raise self.error("value", self.i)
        int_start = self.i
        if c == ord("0"):
            self.i += 1
        else:
            while self.peek() in _DIGITS:
                self.i += 1
        int_digits = b[int_start : self.i]
        is_double = False
        frac_digits: bytes | bytearray = b""
        if self.peek() == ord("."):
            self.i += 1
            if self.peek() not in _DIGITS:
                raise self.error("fraction", self.i)
            f0 = self.i
            while self.peek() in _DIGITS:
                self.i += 1
            frac_digits = b[f0 : self.i]
            is_double = True
        exp_text: bytes | bytearray = b""
        if self.peek() in (ord("e"), ord("E")):
            self.i += 1
            is_double = True
            exp_minus = False
            if self.peek() == ord("+"):
                self.i += 1
            elif self.peek() == ord("-"):
                self.i += 1
                exp_minus = True
            if self.peek() not in _DIGITS:
                raise self.error("exponent", self.i)
            e0 = self.i
            while self.peek() in _DIGITS:
                self.i += 1
            exp_text = b[e0 : self.i]
            # rapidjson refuses a positive exponent beyond 308 minus the fraction digits. (Its
            # digits are counted first: int() refuses strings of more than 4300 digits.)
            exp_digits = exp_text.lstrip(b"0")
            if not exp_minus and (len(exp_digits) > 9 or int(exp_digits or b"0") > 308 + len(frac_digits)):
                raise self.error("too_big", start)
            if exp_minus:
                exp_text = b"-" + exp_text
        text = b[start : self.i]
        if not is_double and len(int_digits) <= 20:  # longer cannot be an int64/uint64: a double
            value = int(int_digits)
            value = -value if minus else value
            if -(2**63) <= value < 2**64:
                return value
        number = float(text)
        if math.isinf(number):
            raise self.error("too_big", start)
        return number

    def _nan_inf(self, minus: bool) -> float:
        def consume(ch: str) -> bool:
            if self.peek() == ord(ch):
                self.i += 1
                return True
            return False

        if consume("N"):
            if consume("a") and consume("N"):
                return math.nan
        elif consume("I") and consume("n") and consume("f"):
            if self.peek() == ord("i"):
                if not all(consume(ch) for ch in "inity"):
                    raise self.error("value", self.i)
            return -math.inf if minus else math.inf
        raise self.error("value", self.i)


# -- printing ---------------------------------------------------------------------------------


def json_type_name(value: object) -> str:
    """rapidjson's type name as tensorflow/serving prints it (``JsonTypeString``)."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def format_rapidjson_double(value: float) -> str | None:
    """rapidjson ``Writer::Double`` text (Grisu shortest digits, ``Prettify``); None for NaN/inf."""
    if math.isnan(value) or math.isinf(value):
        return None
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    digits_t, exponent = Decimal(repr(abs(value))).normalize().as_tuple()[1:]
    digits = "".join(map(str, digits_t))
    length, k = len(digits), int(exponent)
    kk = length + k
    if 0 <= k and kk <= 21:
        text = digits + "0" * k + ".0"
    elif 0 < kk <= 21:
        text = digits[:kk] + "." + digits[kk:]
    elif -6 < kk <= 0:
        text = "0." + "0" * (-kk) + digits
    elif length == 1:
        text = digits + "e" + str(kk - 1)
    else:
        text = digits[0] + "." + digits[1:] + "e" + str(kk - 1)
    return sign + text


def escape_string(text: str) -> str:
    """rapidjson's string escaping: quotes, backslash, control characters (``\\u00XX`` upper hex)."""
    out = ['"']
    for ch in text:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif o < 0x20:
            out.append({8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r"}.get(o, f"\\u{o:04X}"))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


class _Limited(Exception):
    """Raised to stop writing, as ``JsonWriterWithLimit`` returning false stops ``Accept``."""


class _DebugWriter:
    """rapidjson ``PrettyWriter`` with ``kFormatSingleLineArray``, bounded like tensorflow/serving."""

    def __init__(self, limit: int) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.limit = limit
        self.levels: list[list[Any]] = []  # [in_array, value_count]

    def put(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text.encode("utf-8", "surrogateescape"))

    def check(self) -> None:
        if self.size >= self.limit:
            raise _Limited

    def indent(self) -> None:
        self.put(" " * (4 * len(self.levels)))

    def prefix(self) -> None:
        if not self.levels:
            return
        level = self.levels[-1]
        if level[0]:
            if level[1] > 0:
                self.put(", ")
        else:
            if level[1] > 0:
                self.put(",\n" if level[1] % 2 == 0 else ": ")
            else:
                self.put("\n")
            if level[1] % 2 == 0:
                self.indent()
        level[1] += 1

    def write(self, value: object) -> None:
        self.check()
        if isinstance(value, dict):
            self.prefix()
            self.put("{")
            self.levels.append([False, 0])
            for key, item in value.items():
                self.check()
                self.prefix()
                self.put(escape_string(key))
                self.write(item)
            self.check()
            empty = self.levels.pop()[1] == 0
            if not empty:
                self.put("\n")
                self.indent()
            self.put("}")
        elif isinstance(value, list):
            self.prefix()
            self.put("[")
            self.levels.append([True, 0])
            for item in value:
                self.write(item)
            self.check()
            self.levels.pop()
            self.put("]")
        else:
            self.prefix()
            if value is None:
                self.put("null")
            elif value is True:
                self.put("true")
            elif value is False:
                self.put("false")
            elif isinstance(value, str):
                self.put(escape_string(value))
            elif isinstance(value, int):
                self.put(str(value))
            else:
                text = format_rapidjson_double(float(value))  # type: ignore[arg-type]
                if text is None:  # rapidjson's default writer refuses NaN/Inf and stops
                    raise _Limited
                self.put(text)


def debug_string(value: object, limit: int = DEBUG_STRING_LIMIT_BYTES) -> str:
    """``JsonValueToDebugString``: pretty JSON, arrays on one line, cut once ``limit`` bytes are out."""
    writer = _DebugWriter(limit)
    try:
        writer.write(value)
    except _Limited:
        pass
    return "".join(writer.parts)
