"""Decode the hot predict body (integer images as nested JSON lists) straight from the bytes.

``orjson.loads`` + ``np.asarray(..., uint8)`` builds one Python int per pixel (786k for a batch
of 16 128x128x3 images) and is what a naive server measures. Here numpy reads the raw buffer:

1. a regular expression checks the envelope ``{["signature_name": "...",] "instances"|"inputs": [``
   ... ``]}``;
2. every byte of the array must be a digit, ``[``, ``]``, ``,`` or JSON whitespace (whitespace
   may not split a number);
3. the separators (everything but digits) must equal, byte for byte, the skeleton of a dense
   array whose shape is read from the first entry at every level, with exactly one number in
   each slot of an innermost list;
4. numbers have 1-3 digits and no leading zero; they are parsed vectorized and wrapped to
   uint8 like tensorflow/serving's ``int_val`` cast (256 -> 0).

Anything else (other dtypes, signs, floats, long numbers, ragged or empty lists, extra keys,
several inputs, trailing bytes after the object) returns None, and ``bench.json_tensor`` decodes
the body the general way, so acceptance and error messages are the same whichever path runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache

import numpy as np

from bench.json_tensor import DecodedPredict, InputSpec, JsonTensorError, resolve_inputs

__all__ = ["try_fast_decode"]

_WS = rb"[ \t\n\r]*"
_SIG = rb'"signature_name"' + _WS + rb":" + _WS + rb'"([A-Za-z0-9_./\-]*)"'
_PREFIX = re.compile(
    rb"\A"
    + _WS
    + rb"\{"
    + _WS
    + rb"(?:"
    + _SIG
    + _WS
    + rb","
    + _WS
    + rb')?"(instances|inputs)"'
    + _WS
    + rb":"
    + _WS
    + rb"\["
)
_SUFFIX = re.compile(rb"\]" + _WS + rb"(?:," + _WS + _SIG + _WS + rb")?\}" + _WS + rb"\Z")
_ENVELOPE_BYTES = 256

_OPEN, _CLOSE, _COMMA = ord("["), ord("]"), ord(",")
_IS_WS = np.zeros(256, dtype=bool)
_IS_WS[[32, 9, 10, 13]] = True


def try_fast_decode(body: bytes, inputs: object) -> DecodedPredict | None:
    """The decoded request if ``body`` is a plain dense uint8 array body, else None (use the
    general path). ``inputs`` is what ``decode_predict_body`` takes."""
    head = _PREFIX.match(body[:_ENVELOPE_BYTES])
    if head is None:
        return None
    tail_start = max(head.end() - 1, len(body) - _ENVELOPE_BYTES)
    tail = _SUFFIX.search(body, tail_start)
    if tail is None or (head.group(1) is not None and tail.group(1) is not None):
        return None
    signature = (head.group(1) if head.group(1) is not None else tail.group(1) or b"").decode()
    try:
        tensorinfo: Mapping[str, InputSpec] = resolve_inputs(inputs, signature)  # type: ignore[arg-type]
    except JsonTensorError:
        return None  # the general path reports it, after any JSON error that comes first
    if len(tensorinfo) != 1:
        return None
    ((name, spec),) = tensorinfo.items()
    if spec.dtype != "uint8":
        return None
    values = _decode_array(body, head.end() - 1, tail.start() + 1)
    if values is None:
        return None
    return DecodedPredict({name: values}, head.group(2) == b"instances", signature)


def _decode_array(body: bytes, start: int, stop: int) -> np.ndarray | None:
    """``body[start:stop]`` (from ``[`` to its ``]``) as a uint8 array, or None if not plain."""
    full = np.frombuffer(body, dtype=np.uint8)
    buf = full[start:stop]
    src, offset = full, start  # bytes after the closing ']' ('}' at least) pad the digit gathers
    sep_pos = np.flatnonzero((buf - np.uint8(48)) >= 10)
    sep = buf[sep_pos]
    other = (sep != _OPEN) & (sep != _CLOSE) & (sep != _COMMA)
    if other.any():
        if not _IS_WS[sep[other]].all():
            return None
        # Whitespace may separate tokens but never two digits ("1 2" is a JSON error).
        digit = (buf - np.uint8(48)) < 10
        kept = np.flatnonzero(~_IS_WS[buf])
        gap = np.diff(kept) > 1
        if (gap & digit[kept[:-1]] & digit[kept[1:]]).any():
            return None
        src = np.concatenate([buf[kept], np.array([_CLOSE, _CLOSE], dtype=np.uint8)])
        buf, offset = src[:-2], 0
        sep_pos = np.flatnonzero((buf - np.uint8(48)) >= 10)
        sep = buf[sep_pos]
    if sep.size < 2:
        return None
    shape = _shape_from_skeleton(sep)
    if shape is None:
        return None
    expected_sep, run_index = _skeleton(shape)
    if expected_sep.size != sep.size or not np.array_equal(sep, expected_sep):
        return None
    # Digits between consecutive separators: one number (1-3 digits) in each expected slot and
    # nothing anywhere else (the slot lengths then add up to every digit in the buffer).
    lengths = np.diff(sep_pos)[run_index] - 1
    if lengths.min() < 1 or lengths.max() > 3 or int(lengths.sum()) != buf.size - sep.size:
        return None
    starts = sep_pos[run_index] + (1 + offset)
    d0 = src[starts]
    if ((d0 == 48) & (lengths > 1)).any():
        return None  # leading zero: "01" is a JSON error
    values = d0.astype(np.uint16) - 48
    two = lengths > 1
    values = np.where(two, values * 10 + (src[starts + 1].astype(np.uint16) - 48), values)
    three = lengths > 2
    if three.any():
        values = np.where(three, values * 10 + (src[starts + 2].astype(np.uint16) - 48), values)
    return (values & 0xFF).astype(np.uint8).reshape(shape)


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
def _skeleton(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Separators of a dense nested list of ``shape`` and the indices of the separators that a
    number follows."""
    n = shape[-1]
    sep = np.full(n + 1, _COMMA, dtype=np.uint8)
    sep[0], sep[-1] = _OPEN, _CLOSE
    run = np.zeros(n + 1, dtype=bool)
    run[:n] = True
    for count in reversed(shape[:-1]):
        unit_sep = np.append(sep, np.uint8(_COMMA))
        unit_run = np.append(run, False)
        sep = np.concatenate([[np.uint8(_OPEN)], np.tile(unit_sep, count)])
        run = np.concatenate([[False], np.tile(unit_run, count)])
        sep[-1] = _CLOSE
    sep.setflags(write=False)
    run_index = np.flatnonzero(run[:-1])
    run_index.setflags(write=False)
    return sep, run_index
