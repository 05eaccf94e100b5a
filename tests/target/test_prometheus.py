"""Prometheus scraping around a cell: exposition parsing, histogram deltas, server-side stats."""

from __future__ import annotations

import math

import pytest

from bench.target.prometheus import HistogramDelta, counter_delta, histogram_delta, parse_exposition, server_stats


def exposition(latency_us: list[float], runtime_us: list[float], batches: list[int]) -> str:
    """tensorflow/serving-style text for the given observations (microsecond latency buckets)."""
    lines = ["# TYPE :tensorflow:serving:request_latency histogram"]
    lab = 'API="predict",entrypoint="REST",model_name="classifier"'
    lines += [
        f':tensorflow:serving:request_latency_bucket{{{lab},le="{le}"}} {sum(x <= le for x in latency_us)}'
        for le in (1000, 5000, 20000)
    ]
    lines.append(f':tensorflow:serving:request_latency_bucket{{{lab},le="+Inf"}} {len(latency_us)}')
    lines.append(f":tensorflow:serving:request_latency_sum{{{lab}}} {sum(latency_us)}")
    lines.append(f":tensorflow:serving:request_latency_count{{{lab}}} {len(latency_us)}")
    # Another model's series must not leak into ours.
    lines.append(':tensorflow:serving:request_latency_count{API="predict",entrypoint="REST",model_name="other"} 999')
    lines.append(':tensorflow:serving:request_latency_sum{API="predict",entrypoint="REST",model_name="other"} 9e9')
    rl = 'model_name="classifier",API="Predict",runtime="TF1"'  # upstream's RunPredict spelling
    lines.append(f":tensorflow:serving:runtime_latency_sum{{{rl}}} {sum(runtime_us)}")
    lines.append(f":tensorflow:serving:runtime_latency_count{{{rl}}} {len(runtime_us)}")
    bl = 'model_name="classifier"'
    lines.append(f":tensorflow:serving:batching_session:processed_batch_size_sum{{{bl}}} {sum(batches)}")
    lines.append(f":tensorflow:serving:batching_session:processed_batch_size_count{{{bl}}} {len(batches)}")
    return "\n".join(lines) + "\n"


def test_parse_skips_comments_and_keeps_labels() -> None:
    samples = parse_exposition('# HELP x y\nfoo{a="1",b="two words"} 3.5\nbar 2 1700000000\n')
    assert samples[("foo", (("a", "1"), ("b", "two words")))] == 3.5
    assert samples[("bar", ())] == 2.0


def test_server_stats_are_deltas_of_one_model() -> None:
    before = parse_exposition(exposition([800.0] * 10, [300.0] * 10, [1] * 10))
    cell_latency = [800.0] * 10 + [3000.0] * 30 + [10000.0] * 10
    after = parse_exposition(exposition(cell_latency, [300.0] * 10 + [2000.0] * 40, [1] * 10 + [4] * 40))
    stats = server_stats(before, after, model_name="classifier")
    assert stats["requests"] == 40
    assert stats["latency_mean_ms"] == pytest.approx((30 * 3.0 + 10 * 10.0) / 40)
    assert stats["runtime_mean_ms"] == pytest.approx(2.0)
    assert stats["batch_size_mean"] == pytest.approx(4.0)
    # p50 lies in the (1 ms, 5 ms] bucket; interpolation stays inside it.
    assert 1.0 < stats["latency_p50_ms"] <= 5.0
    assert 5.0 < stats["latency_p99_ms"] <= 20.0


def test_no_metrics_means_no_server_stats() -> None:
    assert server_stats(None, None) == {}
    assert server_stats({}, parse_exposition("up 1\n")) == {}


def test_histogram_quantile_interpolates_within_a_bucket() -> None:
    h = HistogramDelta(count=100, sum=0.0, buckets=((10.0, 50.0), (20.0, 100.0), (math.inf, 100.0)))
    assert h.quantile(0.5) == pytest.approx(10.0)
    assert h.quantile(0.75) == pytest.approx(15.0)
    assert histogram_delta({}, {}, "nope") is None


def test_series_lacking_a_wanted_label_are_not_ours() -> None:
    before = parse_exposition("")
    after = parse_exposition(
        ':tensorflow:serving:request_latency_count{API="predict",model_name="classifier"} 5\n'
        ':tensorflow:serving:request_latency_sum{API="predict",model_name="classifier"} 500\n'
        # No model_name at all: once let through, it counted as ours.
        ':tensorflow:serving:request_latency_count{API="predict"} 1000\n'
        ':tensorflow:serving:request_latency_sum{API="predict"} 9e9\n'
    )
    delta = histogram_delta(before, after, ":tensorflow:serving:request_latency", model_name="classifier")
    assert delta is not None
    assert delta.count == 5
    assert delta.mean == 100.0


def test_a_quantile_beyond_the_last_bucket_is_unknown_not_that_bound() -> None:
    h = HistogramDelta(count=100, sum=0.0, buckets=((10.0, 50.0), (20.0, 90.0), (math.inf, 100.0)))
    assert h.quantile(0.5) == pytest.approx(10.0)
    assert h.quantile(0.99) == math.inf  # 10 of 100 above 20: the p99 is somewhere past it
    # server_stats reports no p99 then, rather than the last bound (20 ms would be a lie).
    slow = [800.0] * 90 + [50_000.0] * 10  # microseconds; the largest bucket bound is 20 ms
    stats = server_stats(parse_exposition(""), parse_exposition(exposition(slow, [300.0], [1])), "classifier")
    assert "latency_p99_ms" not in stats
    assert stats["latency_p50_ms"] <= 1.0
    assert stats["requests"] == 100


def test_a_counter_reset_between_scrapes_counts_from_zero() -> None:
    # The server restarted during the cell: its counters started again below their old values.
    before = parse_exposition(exposition([800.0] * 500, [300.0] * 500, [1] * 500))
    after = parse_exposition(exposition([3000.0] * 40, [2000.0] * 40, [4] * 40))
    stats = server_stats(before, after, model_name="classifier")
    assert stats["requests"] == 40
    assert stats["latency_mean_ms"] == pytest.approx(3.0)
    assert stats["runtime_mean_ms"] == pytest.approx(2.0)
    assert stats["batch_size_mean"] == pytest.approx(4.0)
    counts = parse_exposition(':c{model_name="m",status="OK"} 7\n:c{model_name="m",status="ERR"} 3\n')
    restarted = parse_exposition(':c{model_name="m",status="OK"} 2\n:c{model_name="m",status="ERR"} 5\n')
    assert counter_delta(counts, restarted, ":c", model_name="m") == 2 + (5 - 3)
