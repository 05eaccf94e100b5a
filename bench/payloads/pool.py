"""Pre-encoded payload pools: the timed path only sends bytes.

``PayloadPool.build(encoding, source, batch_size, count)`` encodes ``count`` distinct batches
(``source.batch(batch_size, index=i)`` for i = 0..count-1) once, before any load is offered,
and keeps each body with the time its encoding took (``perf_counter`` around ``encode`` only,
not around drawing the images). ``next()`` hands the bodies out round robin.

Memory is bounded by ``max_bytes`` (body bytes held): building stops at the first body that
would cross the bound, so the pool never exceeds it, and ``truncated`` / ``summary()`` report
how many bodies it holds against how many were asked for. At batch 64 a row-orjson body is
about 13 MB, so the default 256 MiB holds about 19 of them.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from bench.errors import ConfigError
from bench.payloads.encodings import Encoding
from bench.payloads.tensors import Batch

DEFAULT_MAX_BYTES = 256 * 1024 * 1024


class BatchSource(Protocol):
    """Images (``bench.payloads.images``) or any signature's batches (``bench.payloads.input_plan``)."""

    def batch(self, size: int, index: int = 0) -> np.ndarray | Batch: ...


@dataclass(frozen=True)
class Payload:
    """One pre-encoded request body and what it cost to make.

    ``batch``: images in the body; ``encode_us``: microseconds ``encoding.encode`` took for it;
    ``headers``: HTTP headers to send with it; ``signature_name``: the signature it targets
    ("" = serving_default).
    """

    body: bytes = field(repr=False)
    batch: int
    encoding: str
    encode_us: float
    headers: dict[str, str]
    signature_name: str

    @property
    def payload_bytes(self) -> int:
        """Bytes on the wire (after any Content-Encoding), i.e. ``len(body)``."""
        return len(self.body)


class PayloadPool:
    """Bodies for one (batch size, encoding) cell, handed out round robin by ``next()``."""

    def __init__(
        self,
        payloads: list[Payload],
        *,
        encoding: str,
        batch_size: int,
        requested: int,
        max_bytes: int,
        build_s: float,
    ) -> None:
        if not payloads:
            raise ConfigError(f"payload pool {encoding} b={batch_size} is empty")
        self._payloads = tuple(payloads)
        self.encoding = encoding
        self.batch_size = batch_size
        self.requested = requested
        self.max_bytes = max_bytes
        self.build_s = build_s
        self.nbytes = sum(p.payload_bytes for p in payloads)
        # itertools.count's __next__ runs in C under the GIL: threads and greenlets each get a
        # distinct index without a lock.
        self._counter = itertools.count()

    @classmethod
    def build(
        cls,
        encoding: Encoding,
        source: BatchSource,
        batch_size: int,
        count: int,
        max_bytes: int = DEFAULT_MAX_BYTES,
        input_name: str | None = "examples",
    ) -> PayloadPool:
        """Encode ``count`` distinct batches of ``batch_size`` images, holding at most ``max_bytes``.

        Raises ``ConfigError`` for a non-positive size or count, or when not even one body fits
        in ``max_bytes``.
        """
        if batch_size <= 0:
            raise ConfigError(f"batch size must be a positive integer, got {batch_size}")
        if count <= 0:
            raise ConfigError(f"pool size must be a positive integer, got {count}")
        if max_bytes <= 0:
            raise ConfigError(f"pool memory bound must be positive, got {max_bytes} bytes")
        started = time.perf_counter()
        payloads: list[Payload] = []
        held = 0
        headers = encoding.headers()
        for index in range(count):
            batch = source.batch(batch_size, index=index)
            t0 = time.perf_counter()
            body = encoding.encode(batch, input_name)
            encode_us = (time.perf_counter() - t0) * 1e6
            if held + len(body) > max_bytes:
                if not payloads:
                    raise ConfigError(
                        f"one {encoding.name} body of batch {batch_size} is {len(body):,} bytes, "
                        f"more than the pool's memory bound of {max_bytes:,} bytes"
                    )
                break
            held += len(body)
            payloads.append(Payload(body, batch_size, encoding.name, encode_us, dict(headers), encoding.signature_name))
        return cls(
            payloads,
            encoding=encoding.name,
            batch_size=batch_size,
            requested=count,
            max_bytes=max_bytes,
            build_s=time.perf_counter() - started,
        )

    def next(self) -> Payload:
        """The next body, round robin."""
        return self._payloads[next(self._counter) % len(self._payloads)]

    def __len__(self) -> int:
        return len(self._payloads)

    def __iter__(self) -> Iterator[Payload]:
        return iter(self._payloads)

    @property
    def truncated(self) -> bool:
        """True when the memory bound stopped the build before ``requested`` bodies."""
        return len(self._payloads) < self.requested

    @property
    def encode_us_median(self) -> float:
        values = sorted(p.encode_us for p in self._payloads)
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

    def summary(self) -> str:
        """One line: e.g. ``pool b=64 row-orjson: 19/64 bodies, 253.1 MB (bound 268.4 MB reached), built in 2.1 s``."""
        bound = f" (bound {self.max_bytes / 1e6:.1f} MB reached)" if self.truncated else ""
        return (
            f"pool b={self.batch_size} {self.encoding}: {len(self)}/{self.requested} bodies, "
            f"{self.nbytes / 1e6:.1f} MB{bound}, median encode {self.encode_us_median / 1e3:.2f} ms, "
            f"built in {self.build_s:.1f} s"
        )
