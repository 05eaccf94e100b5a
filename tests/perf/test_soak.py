"""A short soak: mixed valid and malformed traffic against a real server process; every probe
gets its expected answer, and RSS and threads stay inside bounds derived from the body limit
and the pool (not from time)."""

from __future__ import annotations

from bench.perf.soak import build_probes, run_soak


def test_a_short_soak_keeps_rss_and_threads_bounded(model_base_path) -> None:
    limit = 2 << 20
    result = run_soak(model_base_path, duration_s=10, clients=2, max_body_bytes=limit, server_threads=2)
    print(result.report())
    assert result.problems == []
    assert set(result.outcomes) == set(build_probes(limit))
    assert all(sum(counts.values()) >= 1 for counts in result.outcomes.values())
    assert result.max_rss() <= result.start.rss_bytes + 3 * limit * 2 + (128 << 20)
    assert result.max_threads() <= result.start.threads + 2 * 2  # the REST pool and the run pool
    assert result.serving_at_end
