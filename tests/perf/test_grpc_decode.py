"""The gRPC-vs-JSON decode benchmark runs, checks both decodes against the batch, and sizes the
messages as the reference's table does (tensor_content: raw pixels + a few bytes)."""

from __future__ import annotations

import pytest

from bench.perf.grpc_decode import format_rows, grpc_decode_rows

pytest.importorskip("tensorflow_serving")


def test_the_decode_benchmark_measures_both_decoders_on_the_same_batch() -> None:
    [row] = grpc_decode_rows((2,), repeat=1)
    assert row.batch == 2
    assert 0 < row.grpc_bytes - 2 * 128 * 128 * 3 < 100  # tensor_content: one byte per value
    assert row.json_bytes > 3 * 2 * 128 * 128 * 3  # JSON: digits and commas
    assert row.json_ms > 0
    assert row.grpc_ms > 0
    text = format_rows([row])
    assert "target: gRPC tensor_content decode >= 20x" in text
