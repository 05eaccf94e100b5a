"""Payload pools: distinct bodies, carried encode cost, and a memory bound that is never crossed."""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np
import pytest

from bench.errors import ConfigError
from bench.payloads.encodings import decode_batch, get_encoding
from bench.payloads.images import SyntheticImages
from bench.payloads.pool import PayloadPool

SOURCE = SyntheticImages(24, 24, seed=5)


@pytest.mark.parametrize("name", ["row-orjson", "row-fast", "row-orjson-gzip", "b64-png"])
def test_pool_holds_distinct_bodies_with_their_cost(name: str) -> None:
    encoding = get_encoding(name)
    pool = PayloadPool.build(encoding, SOURCE, batch_size=3, count=5)
    assert len(pool) == 5
    assert not pool.truncated
    payloads = list(pool)
    assert len({p.body for p in payloads}) == 5
    assert pool.nbytes == sum(len(p.body) for p in payloads)
    for index, payload in enumerate(payloads):
        assert payload.payload_bytes == len(payload.body)
        assert payload.batch == 3
        assert payload.encoding == name
        assert payload.encode_us > 0
        assert payload.headers == encoding.headers()
        assert payload.signature_name == encoding.signature_name
        # body i carries batch i of the source, nothing else
        if encoding.lossless:
            assert np.array_equal(decode_batch(encoding, payload.body), SOURCE.batch(3, index=index))


def test_next_is_round_robin() -> None:
    pool = PayloadPool.build(get_encoding("row-orjson"), SOURCE, 1, 3)
    bodies = [pool.next().body for _ in range(7)]
    assert bodies[:3] == [p.body for p in pool]
    assert bodies[3:6] == bodies[:3]
    assert bodies[6] == bodies[0]


def test_next_from_many_threads_spreads_evenly() -> None:
    pool = PayloadPool.build(get_encoding("row-orjson"), SOURCE, 1, 4)
    seen: Counter[bytes] = Counter()
    lock = threading.Lock()

    def work() -> None:
        local = [pool.next().body for _ in range(200)]
        with lock:
            seen.update(local)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(seen.values()) == [200, 200, 200, 200]


def test_memory_bound_is_never_exceeded() -> None:
    encoding = get_encoding("row-orjson")
    sizes = [len(encoding.encode(SOURCE.batch(2, index=i))) for i in range(10)]
    exact = sum(sizes[:4])
    pool = PayloadPool.build(encoding, SOURCE, 2, 10, max_bytes=exact)
    assert len(pool) == 4  # exactly fits: the bound is inclusive
    assert pool.nbytes == exact
    assert pool.truncated
    assert "4/10 bodies" in pool.summary()
    assert "bound" in pool.summary()
    one_short = PayloadPool.build(encoding, SOURCE, 2, 10, max_bytes=exact - 1)
    assert len(one_short) == 3
    assert one_short.nbytes <= exact - 1
    roomy = PayloadPool.build(encoding, SOURCE, 2, 10, max_bytes=10 * max(sizes))
    assert len(roomy) == 10
    assert not roomy.truncated
    assert "bound" not in roomy.summary()


def test_bad_pool_arguments() -> None:
    encoding = get_encoding("row-orjson")
    with pytest.raises(ConfigError, match="more than the pool's memory bound"):
        PayloadPool.build(encoding, SOURCE, 2, 3, max_bytes=100)
    with pytest.raises(ConfigError, match="pool size"):
        PayloadPool.build(encoding, SOURCE, 2, 0)
    with pytest.raises(ConfigError, match="batch size"):
        PayloadPool.build(encoding, SOURCE, 0, 2)
