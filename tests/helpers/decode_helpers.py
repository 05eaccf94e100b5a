"""Shared by the decode agreement tests: what a body decodes to, comparable across both paths."""

from __future__ import annotations

import numpy as np

from bench.payloads.specs import REFERENCE_SIGNATURES
from bench.serving.json_tensor import decode_predict_body
from bench.serving.status import ServingError


def outcome(body: bytes, fast: bool, inputs=REFERENCE_SIGNATURES) -> tuple:
    """The decoded tensors (dtype, shape, bytes) or the error (code, message), fast or general path."""
    try:
        decoded = decode_predict_body(body, inputs, fast=fast)
    except ServingError as exc:
        return ("error", exc.code, exc.message)
    tensors = {k: (v.dtype.str, v.shape, v.tobytes()) for k, v in decoded.tensors.items()}
    return ("ok", decoded.row_format, decoded.signature_name, tensors)


def dense(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Seeded integers 0..999: past uint8's range on purpose, so the wrap-around is exercised."""
    return np.random.default_rng(seed).integers(0, 1000, size=shape)
