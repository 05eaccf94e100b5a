"""Decode the hot predict bodies (integer images as nested JSON lists) straight from the bytes.

``orjson.loads`` + ``np.asarray(..., uint8)`` builds one Python int per pixel (786k for a batch
of 16 128x128x3 images) and is what a naive server measures. Here numpy reads the raw buffer.
Three body forms, for a signature with a single uint8 input (``examples`` below):

* row / columnar: ``{"instances": [...]}`` or ``{"inputs": [...]}``;
* named columnar: ``{"inputs": {"examples": [...]}}``;
* named instances: ``{"instances": [{"examples": [...]}, {"examples": [...]}, ...]}``;

each with an optional ``"signature_name"`` first or last and JSON whitespace anywhere between
tokens. The steps:

1. regular expressions check the envelope (and, for named instances, the ``{"examples":``
   opening each element; the key text is then blanked to spaces in a private copy);
2. every byte of the array must be a digit, ``[``, ``]``, ``,`` (``{``/``}`` around named
   instances) or JSON whitespace;
3. the separators (every non-digit byte except whitespace) must equal, byte for byte, the
   skeleton of a dense array whose shape is read from the first entry at every level, and the
   digit runs must sit exactly one in each slot of an innermost list (so whitespace can never
   split a number: ``1 2`` is two runs in one slot);
4. numbers have 1-3 digits and no leading zero; they are parsed vectorized and wrapped to
   uint8 like tensorflow/serving's ``int_val`` cast (256 -> 0).

Anything else (other dtypes, signs, floats, long numbers, ragged or empty lists, extra keys,
several inputs, escaped keys, trailing bytes after the object) returns None, and
``bench.serving.json_tensor`` decodes the body the general way, so acceptance and error messages are the
same whichever path runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache

import numpy as np

from bench.payloads.specs import InputSpec
from bench.serving.predict_request import DecodedPredict, Inputs, resolve_inputs
from bench.serving.status import ServingError

__all__ = ["try_fast_decode"]

_WS = rb"[ \t\n\r]*"
_SIG = rb'"signature_name"' + _WS + rb":" + _WS + rb'"([A-Za-z0-9_./\-]*)"'
# Groups: 1 signature name, 2 instances|inputs, 3 the input name of a named columnar body.
_PREFIX = re.compile(
    rb"\A" + _WS + rb"\{" + _WS + rb"(?:" + _SIG + _WS + rb"," + _WS + rb')?"(instances|inputs)"' + _WS + rb":"
    + _WS + rb'(?:\{' + _WS + rb'"([^"\\]*)"' + _WS + rb":" + _WS + rb")?\["
)  # fmt: skip
# Groups: 1 the close of a named columnar body's inner object, 2 signature name.
_SUFFIX = re.compile(rb"\]" + _WS + rb"(\}" + _WS + rb")?(?:," + _WS + _SIG + _WS + rb")?\}" + _WS + rb"\Z")
_NAMED_FIRST = re.compile(_WS + rb"\{")
_ENVELOPE_BYTES = 256

_OPEN, _CLOSE, _COMMA, _LBRACE, _RBRACE, _SPACE = (ord(c) for c in "[],{} ")
_AS_BRACKET = np.arange(256, dtype=np.uint8)  # braces read as brackets for the shape walk
_AS_BRACKET[_LBRACE], _AS_BRACKET[_RBRACE] = _OPEN, _CLOSE


def try_fast_decode(body: bytes | bytearray, inputs: Inputs) -> DecodedPredict | None:
    """The decoded request if ``body`` is a plain dense uint8 array body, else None (use the
    general path). ``inputs`` is what ``decode_predict_body`` takes."""
    head = _PREFIX.match(body[:_ENVELOPE_BYTES])
    if head is None:
        return None
    row = head.group(2) == b"instances"
    inner_name = head.group(3)
    if inner_name is not None and row:
        return None  # "instances" must be a list: the general path reports it
    tail_start = max(head.end() - 1, len(body) - _ENVELOPE_BYTES)
    tail = _SUFFIX.search(body, tail_start)
    if tail is None or (inner_name is None) != (tail.group(1) is None):
        return None
    if head.group(1) is not None and tail.group(2) is not None:
        return None
    signature = (head.group(1) if head.group(1) is not None else tail.group(2) or b"").decode()
    try:
        tensorinfo: Mapping[str, InputSpec] = resolve_inputs(inputs, signature)
    except ServingError:
        return None  # the general path reports it, after any JSON error that comes first
    if len(tensorinfo) != 1:
        return None
    ((name, spec),) = tensorinfo.items()
    if spec.dtype != "uint8":
        return None
    key = name.encode()
    if inner_name is not None and inner_name != key:
        return None
    start, stop = head.end() - 1, tail.start() + 1  # '[' ... its ']'
    full = np.frombuffer(body, dtype=np.uint8)
    if row and _NAMED_FIRST.match(body, start + 1):
        values = _decode_named_instances(body, full, start, stop, key)
    else:
        values = _decode_array(full, start, stop, named=False)
    if values is None:
        return None
    return DecodedPredict({name: values}, row, signature)


def _decode_named_instances(
    body: bytes | bytearray, full: np.ndarray, start: int, stop: int, key: bytes
) -> np.ndarray | None:
    """``[{"key": [...]}, ...]`` as ``[{[...]}, ...]``: the key text of every element blanked to
    spaces in a copy, then decoded as an array whose level-1 lists are braces."""
    if b'"' in key or b"\\" in key:
        return None
    opening = re.compile(rb"\{" + _WS + rb'"' + re.escape(key) + rb'"' + _WS + rb":" + _WS + rb"\[")
    region = full[start : stop + 1]  # one byte past ']' (at least '}') pads the digit gathers
    braces = np.flatnonzero(region == _LBRACE)
    if braces.size == 0:
        return None
    work = region.copy()
    for brace in braces.tolist():  # one per instance: a Python loop over the batch, not pixels
        match = opening.match(body, start + brace)
        if match is None:
            return None
        work[brace + 1 : match.end() - 1 - start] = _SPACE
    values = _decode_array(work, 0, stop - start, named=True)
    if values is None or values.shape[1] != 1:
        return None
    return values.reshape(values.shape[0], *values.shape[2:])


def _decode_array(src: np.ndarray, start: int, stop: int, *, named: bool) -> np.ndarray | None:
    """``src[start:stop]`` (from ``[`` to its ``]``) as a uint8 array, or None if not plain.
    ``src`` holds at least one byte after ``stop``. With ``named``, the level-1 lists are
    ``{...}`` (read as brackets: shape ``[batch, 1, ...]``)."""
    buf = src[start:stop]
    nondigit_pos = np.flatnonzero((buf - np.uint8(48)) >= 10)
    sep = buf[nondigit_pos]
    if sep.size < 2:
        return None
    structural = (sep == _COMMA) | (sep == _OPEN) | (sep == _CLOSE)  # compares beat a table gather
    if named:
        braces = (sep == _LBRACE) | (sep == _RBRACE)
        if not braces.any():
            return None
        structural |= braces
    spaced = not structural.all()
    if spaced:
        if not (structural | _is_ws(sep)).all():
            return None
        # Digit runs are the gaps between consecutive non-digit bytes. Counting separators
        # without the whitespace gives each run's slot; every expected slot must hold exactly
        # one run (so whitespace never splits a number: "1 2" is two runs in one slot).
        gaps = np.diff(nondigit_pos)
        number_at = np.flatnonzero(gaps > 1)
        slot_of_number = np.cumsum(structural, dtype=np.int32)[number_at] - 1  # int32: 3x faster
        sep = sep[structural]
    shape = _shape_from_skeleton(_AS_BRACKET[sep] if named else sep)
    if shape is None or (named and (len(shape) < 3 or shape[1] != 1)):
        return None
    expected_sep, run_index = _skeleton(shape, named)
    if expected_sep.size != sep.size or not np.array_equal(sep, expected_sep):
        return None
    if spaced:
        if number_at.size != run_index.size or not np.array_equal(slot_of_number, run_index):
            return None
        return _numbers(src, nondigit_pos[number_at] + (1 + start), gaps[number_at] - 1, shape)
    # Digits between consecutive separators: one number in each expected slot and nothing
    # anywhere else (the slot lengths then add up to every digit in the buffer).
    lengths = np.diff(nondigit_pos)[run_index] - 1
    if lengths.min() < 1 or int(lengths.sum()) != buf.size - sep.size:
        return None
    return _numbers(src, nondigit_pos[run_index] + (1 + start), lengths, shape)


def _is_ws(sep: np.ndarray) -> np.ndarray:
    ws: np.ndarray = (sep == 32) | (sep == 10) | (sep == 13) | (sep == 9)
    return ws


def _numbers(src: np.ndarray, starts: np.ndarray, lengths: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """The 1-3 digit numbers at ``starts`` wrapped to uint8, or None (longer, leading zero).

    One unaligned 4-byte gather per number instead of one per digit: subtracting ``'0'`` from
    every byte leaves the digits exact (a borrow only starts at a non-digit byte above them),
    shifting left by ``3 - length`` bytes right-aligns them in bytes 0-2, and one multiply by
    ``100 * 2**16 + 10 * 2**8 + 1`` sums ``100*d0 + 10*d1 + d2`` into bits 16-23 modulo 256,
    which is the uint8 wrap tensorflow/serving applies.
    """
    if lengths.max() > 3:
        return None
    if int(starts[-1]) + 4 > src.size:  # the last word would read past the buffer: pad a copy
        src = np.concatenate([src, np.zeros(4, dtype=np.uint8)])
    words = np.ndarray((src.size - 3,), dtype="<u4", buffer=src, strides=(1,))[starts]
    if (((words & 0xFF) == 48) & (lengths > 1)).any():
        return None  # leading zero: "01" is a JSON error
    words -= np.uint32(0x30303030)
    words <<= ((3 - lengths) * 8).astype(np.uint32)
    words &= np.uint32(0x00FFFFFF)
    words *= np.uint32(0x00640A01)
    words >>= np.uint32(16)
    numbers: np.ndarray = words.astype(np.uint8).reshape(shape)
    return numbers


def _shape_from_skeleton(sep: np.ndarray) -> tuple[int, ...] | None:
    """Dimensions along the first entry at every level, read from the separator sequence."""
    depth = 0
    limit = min(sep.size, 64)
    while depth < limit and sep[depth] == _OPEN:
        depth += 1
    if depth == 0 or depth >= limit:
        return None
    # Innermost list: '[' then n-1 commas then ']' (its values sit between them).
    close = depth - 1
    while close < sep.size and sep[close] != _CLOSE:
        close += 1
    if close >= sep.size:
        return None
    dims = [close - depth + 1]
    span = dims[0] + 1  # separators in one innermost list
    for level in range(depth - 2, -1, -1):
        pos = level + 1
        count = 1
        while pos + span < sep.size and sep[pos + span] == _COMMA:
            pos += span + 1
            count += 1
        if pos + span >= sep.size or sep[pos + span] != _CLOSE:
            return None
        dims.append(count)
        span = count * (span + 1) + 1
    if min(dims) < 1:
        return None
    return tuple(reversed(dims))


@lru_cache(maxsize=16)
def _skeleton(shape: tuple[int, ...], named: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Separators of a dense nested list of ``shape`` (level-1 lists as ``{...}`` when
    ``named``) and the indices of the separators that a number follows."""
    n = shape[-1]
    sep = np.full(n + 1, _COMMA, dtype=np.uint8)
    sep[0], sep[-1] = _OPEN, _CLOSE
    run = np.zeros(n + 1, dtype=bool)
    run[:n] = True
    outer = shape[:-1]
    for level in range(len(outer) - 1, -1, -1):
        unit_sep = np.append(sep, np.uint8(_COMMA))
        unit_run = np.append(run, False)
        opening, closing = (_LBRACE, _RBRACE) if named and level == 1 else (_OPEN, _CLOSE)
        sep = np.concatenate([[np.uint8(opening)], np.tile(unit_sep, outer[level])])
        run = np.concatenate([[False], np.tile(unit_run, outer[level])])
        sep[-1] = closing
    sep.setflags(write=False)
    run_index = np.flatnonzero(run[:-1])
    run_index.setflags(write=False)
    return sep, run_index
