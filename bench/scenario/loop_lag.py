"""The load generator's event loop watched from inside: how late it runs ready work, and when it last idled.

A Locust process is one gevent loop. When it has more ready work than one core does (many
users, replies arriving faster than it handles them), every greenlet waits its turn: a user
whose reply has arrived is not run, a user whose slot has come is not woken.

:class:`LoopLag`: a timer greenlet asks to wake every :data:`LOOP_TICK_S` and notes how late
it woke (Node's "event-loop lag"). The side-car keeps the process's p99 and max as evidence
for the verdict; it is the generator's own delay, whatever the CPU monitor's 5 s windows say.

:class:`LoopWatch`: libev's prepare and check watchers run just before and just after the loop
polls for I/O. A poll that *blocked* means nothing was ready then: no reply had arrived (a poll
counts as blocked when the thread gave up the CPU in it, a voluntary context switch, and not
when the kernel merely preempted it on a busy machine, which would look just as long). So
of a request sent at ``s`` and handled at ``d``, at least ``d - max(s, last block's end)`` is
the generator's (its reply arrived after the loop last idled, and waited for the process),
and that bound is tight when the loop idles often, i.e. when the generator has time to
spare. ``bench.scenario.schedule.LagAccount`` uses it to split each send's lateness between
the server and the generator. (The ticker's lag cannot do that: a request waits for the loop
at every blocking step, several times a tick, more with more users.)

Usage (the watchers and the tick loop are started in bench.scenario.hooks)::

    lag = LoopLag()
    lag.record(woke_late_ms)                 # once per tick
    lag.p99_ms, lag.max_ms
    watch = LoopWatch()
    watch.before_poll(now_s, switches); watch.after_poll(now_s, switches)  # libev prepare / check
    watch.generator_ms(started_s, done_s)    # the generator's part of one request
"""

from __future__ import annotations

import math

import numpy as np

LOOP_TICK_S = 0.01
# A poll that returned after this long blocked (nothing was ready); one with work pending takes ~20 us.
BLOCK_MIN_S = 0.0001
MAX_SAMPLES = 1_000_000  # about 3 hours of ticks; past that only the maximum is kept up to date


class LoopLag:
    """Wake-up lateness samples of one process's event loop (ms)."""

    def __init__(self) -> None:
        self._samples: list[float] = []
        self.max_ms = 0.0

    def record(self, lag_ms: float) -> None:
        value = max(0.0, lag_ms)
        if len(self._samples) < MAX_SAMPLES:
            self._samples.append(value)
        self.max_ms = max(self.max_ms, value)

    @property
    def p99_ms(self) -> float:
        return float(np.percentile(self._samples, 99)) if self._samples else 0.0

    @property
    def samples(self) -> int:
        return len(self._samples)


class LoopWatch:
    """When this process's event loop last blocked in its I/O poll (perf_counter seconds).

    ``idle_s`` adds up the blocked time: the share of the run the generator had nothing to do.
    """

    def __init__(self) -> None:
        self.last_idle_end_s = -math.inf
        self.idle_s = 0.0
        self._poll_start: tuple[float, int] | None = None

    def before_poll(self, now_s: float, voluntary_switches: int = 0) -> None:
        """``voluntary_switches``: the thread's count of voluntary context switches (getrusage)."""
        self._poll_start = (now_s, voluntary_switches)

    def after_poll(self, now_s: float, voluntary_switches: int = 1) -> None:
        start, self._poll_start = self._poll_start, None
        if start is None:
            return
        began_s, switches = start
        if now_s - began_s >= BLOCK_MIN_S and voluntary_switches > switches:
            self.last_idle_end_s = now_s
            self.idle_s += now_s - began_s

    def generator_ms(self, started_s: float, done_s: float) -> float:
        """The generator's part of a request sent at ``started_s`` and handled at ``done_s`` (ms).

        Its reply cannot have arrived before the loop last idled, so everything since then (or
        since the send) was the reply waiting for the process, and the process handling it.
        """
        return max(0.0, (done_s - max(started_s, self.last_idle_end_s)) * 1000.0)
