"""Arrival schedules: when each simulated user should send its next request.

Three models (``--arrival``):

``closed``
    N users, each sends, waits for the reply, optionally thinks (``--think-time``), sends again.
    The offered load follows the server: when it slows down, fewer requests are sent. Use it to
    find the throughput a fixed concurrency reaches (e.g. "8 clients in a loop, how many
    images/s?"), and for interactive exploration in the web UI. Do *not* read its latency
    percentiles as what users at a given request rate would see: a stall delays the next sends
    too, so the slow period is under-sampled (coordinated omission).

``constant`` / ``poisson``
    Open model: a target total request rate (``--rate``, requests/s across all users and
    processes) is split evenly, each user gets ``rate / users``. Each user owns a schedule of
    *intended* send times: ``constant`` puts user ``k`` of ``N`` on the slots
    ``epoch + k/rate + j*N/rate`` of one shared grid, so the users' sends interleave into one
    evenly spaced stream at ``rate`` (a random phase per user would bunch sends together every
    cycle, and a single-queue server would then queue below its capacity); ``poisson`` gives
    each user independent exponential gaps, whose sum is again a Poisson stream at ``rate``
    (the arrivals of many independent clients). Latency counts from the intended send time,
    so when the server stalls the requests that should have gone out meanwhile show the wait
    as latency, and a send that starts more than :data:`LATE_TOLERANCE_MS` after its intended
    time is counted as late. Use ``constant`` for capacity probes and SLO checks at a known
    load (least noise), ``poisson`` for realistic queueing at that load (bursts make p99
    higher than ``constant`` at the same rate). Give enough users: a user sends one request
    at a time, so ``users`` must exceed ``rate x expected latency``; otherwise sends queue
    behind their own user, show up as late sends and growing latency, and the run says so.

Usage::

    arrival = parse_arrival("constant", rate="200")     # 200 req/s in total
    # user 3 of 20 (10 req/s each), on the slot grid every user and process shares from t0
    schedule = UserSchedule(arrival, users=20, user_index=3, epoch_s=t0)  # t0: perf_counter s
    intended = schedule.next_send()                     # perf_counter seconds
    ...sleep until intended, send, measure latency from intended...
    lag_ms = send_lag_ms(intended, time.perf_counter())

Who made a send late (``lag_cause`` in the records) is :class:`LagAccount`'s, one per user:
it carries the user's lateness forward from send to send, split into the part the target
caused (the user waited on a reply) and the part the generator caused (it woke late, or a
reply sat in its own event loop), so a user that fell behind because its process was
overloaded is not later blamed on the server just because it is now always busy.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bench.errors import ConfigError
from bench.store.lateness import CAUSE_BUSY, CAUSE_IDLE, LATE_TOLERANCE_MS

ARRIVALS: tuple[str, ...] = ("closed", "poisson", "constant")


@dataclass(frozen=True)
class Arrival:
    """An arrival model: ``closed`` (think time between sends) or open at ``rate_per_s`` in total."""

    model: str = "closed"
    rate_per_s: float | None = None
    think_time_s: float = 0.0

    @property
    def is_open(self) -> bool:
        return self.model != "closed"

    def user_rate_per_s(self, users: int) -> float:
        """Each user's share of the total rate (users across all processes)."""
        if not self.is_open or self.rate_per_s is None:
            raise ConfigError(f"the {self.model} arrival model has no rate")
        return self.rate_per_s / max(users, 1)

    def describe(self) -> str:
        if self.is_open:
            return f"{self.model} at {self.rate_per_s:g} req/s in total"
        return f"closed, think time {self.think_time_s:g} s"


def parse_arrival(model: str, rate: float | str | None = None, think_time_s: float | str | None = 0.0) -> Arrival:
    """Validate ``--arrival``, ``--rate`` and ``--think-time`` values into an :class:`Arrival`.

    Raises ConfigError (one line) for an unknown model, an open model without a positive rate,
    or a negative think time. A rate given with ``closed`` is an error too: it would be ignored.
    """
    name = (model or "closed").strip().lower()
    if name not in ARRIVALS:
        raise ConfigError(f"unknown arrival model '{model}' (choose from {', '.join(ARRIVALS)})")
    rate_value = _optional_float(rate, "--rate")
    think = _optional_float(think_time_s, "--think-time") or 0.0
    if think < 0:
        raise ConfigError(f"--think-time must be zero or positive, got '{think_time_s}'")
    if name == "closed":
        if rate_value is not None:
            raise ConfigError("--rate needs an open arrival model (--arrival poisson or constant)")
        return Arrival("closed", None, think)
    if rate_value is None or not rate_value > 0 or math.isinf(rate_value):
        raise ConfigError(f"--arrival {name} needs a positive --rate (total requests/s), got '{rate or ''}'")
    if think:
        raise ConfigError("--think-time applies to the closed model only; an open model sends on its schedule")
    return Arrival(name, rate_value, 0.0)


def _optional_float(value: float | str | None, flag: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{flag} must be a number, got '{value}'") from None


class UserSchedule:
    """Intended send times of one user in an open model, on the ``clock`` timeline (seconds).

    ``constant``: user ``user_index`` of ``users`` sends on the slots
    ``epoch_s + (user_index mod users) / rate + j * users / rate`` (``rate`` the total), so
    ``users`` schedules with indexes ``0..users-1`` and one ``epoch_s`` merge into sends exactly
    ``1/rate`` apart. A user that starts late (spawn ramp, warm-up) begins at its first slot
    not before ``start_s`` instead of catching up. Without a ``user_index`` (not known) the
    phase within one interval is random, which keeps users apart on average only.

    ``poisson``: independent exponential gaps from ``start_s`` at the user's share; the merged
    stream of many such users is Poisson at the total rate, so no index or epoch is needed.

    The schedule never waits for replies: if the user falls behind, the next intended time is
    already in the past, the send starts late, and that lag is part of the measured latency.
    """

    def __init__(
        self,
        arrival: Arrival,
        users: int,
        seed: int | None = None,
        start_s: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
        user_index: int | None = None,
        epoch_s: float | None = None,
    ) -> None:
        if not arrival.is_open:
            raise ConfigError("a send schedule needs an open arrival model")
        self.arrival = arrival
        self.rate_per_s = arrival.user_rate_per_s(users)
        self.interval_s = 1.0 / self.rate_per_s
        self._rng = random.Random(seed)
        self._clock = clock
        self._open_s: float | None = None  # the slot handed out whose send has not finished
        begin = clock() if start_s is None else start_s
        if arrival.model == "poisson":
            # The first gap is exponential like every other (memoryless).
            self._next_s = begin + self._rng.expovariate(self.rate_per_s)
            return
        if user_index is None:
            self._origin_s = begin + self._rng.random() * self.interval_s
            self._slot = 0
        else:
            grid_s = begin if epoch_s is None else epoch_s
            self._origin_s = grid_s + (user_index % max(users, 1)) * self.interval_s / max(users, 1)
            # The first own slot at or after begin; slots are counted, not summed, so the
            # grid does not drift apart between users over a long run.
            self._slot = max(0, math.ceil((begin - self._origin_s) / self.interval_s - 1e-9))
        self._next_s = self._origin_s + self._slot * self.interval_s

    def next_send(self) -> float:
        """The next intended send time (clock seconds); advances the schedule.

        The slot stays *open* until :meth:`finished`: a send that never completes (its user was
        stopped mid-request) is still owed at the end (:meth:`unanswered_until`).
        """
        intended = self._next_s
        if self.arrival.model == "poisson":
            self._next_s = intended + self._rng.expovariate(self.rate_per_s)
        else:
            self._slot += 1
            self._next_s = self._origin_s + self._slot * self.interval_s
        self._open_s = intended
        return intended

    def finished(self) -> None:
        """The send of the slot last handed out completed (answered and recorded, or failed and recorded)."""
        self._open_s = None

    def unanswered_until(self, until_s: float) -> np.ndarray:
        """Intended times (clock s) up to ``until_s`` that never got an answer; ends the schedule.

        The slot handed out but not :meth:`finished`, and every slot not handed out yet (its
        user was behind). Counted arithmetically (constant) or drawn in bulk (poisson: the
        rest of a Poisson stream, statistically the same as drawing it one gap at a time),
        because a user far behind at a high rate owes thousands of slots.
        """
        open_s, self._open_s = self._open_s, None
        head = np.array([open_s] if open_s is not None and open_s <= until_s else [], dtype=float)
        if self._next_s > until_s:
            return head
        if self.arrival.model == "poisson":
            rng = np.random.default_rng(self._rng.getrandbits(64))
            times: list[np.ndarray] = []
            t = self._next_s
            while t <= until_s:
                chunk = t + np.concatenate(([0.0], np.cumsum(rng.exponential(self.interval_s, size=1023))))
                times.append(chunk[chunk <= until_s])
                t = float(chunk[-1]) + float(rng.exponential(self.interval_s))
            rest = np.concatenate(times)
        else:
            last = math.floor((until_s - self._origin_s) / self.interval_s + 1e-9)
            rest = self._origin_s + np.arange(self._slot, last + 1) * self.interval_s
        self._next_s = math.inf
        return np.concatenate((head, rest))

    def skip_until(self, until_s: float) -> int:
        """Drop the slots due before ``until_s`` (a user backing off a dead server); returns how many.

        Sending them late would turn the back-off into a burst; they are not owed either: the
        server refused connections, and the rows of those refusals already say so.
        """
        skipped = 0
        if self.arrival.model == "poisson":
            while self._next_s < until_s:
                self._next_s += self._rng.expovariate(self.rate_per_s)
                skipped += 1
            return skipped
        if self._next_s < until_s:
            target = math.ceil((until_s - self._origin_s) / self.interval_s - 1e-9)
            skipped = target - self._slot
            self._slot = target
            self._next_s = self._origin_s + self._slot * self.interval_s
        return skipped

    def wait_s(self, intended_s: float) -> float:
        """Seconds to sleep until ``intended_s`` (0 when it is already due or past)."""
        return max(0.0, intended_s - self._clock())


def global_user_index(local_index: int, worker_index: int = 0, workers: int = 1) -> int:
    """A user's index among the users of all load-generating processes (its constant-rate slot).

    Locust deals users out to its workers in turn, so with equal shares the users of worker
    ``w`` of ``W`` (in spawn order ``0, 1, ...``) get ``w, w+W, w+2W, ...``: every index once,
    and the merged sends are evenly spaced. With unequal shares (users not a multiple of
    workers) a few slots pair up: still far closer to constant than random phases.
    """
    return local_index * max(workers, 1) + max(worker_index, 0)


def send_lag_ms(intended_s: float, actual_s: float) -> float:
    """How late a send started, in ms (never negative: early wake-ups count as on time)."""
    return max(0.0, (actual_s - intended_s) * 1000.0)


def is_late(lag_ms: float, tolerance_ms: float = LATE_TOLERANCE_MS) -> bool:
    return lag_ms > tolerance_ms


@dataclass
class LagAccount:
    """One user's send lag, split into what the target caused and what the generator caused.

    A user owns one request at a time. When its slot comes while its previous request is
    still out, the slot waits for the user (``busy``); when the user is free but the send
    starts late, the generator is behind (``idle``). A user that fell behind stays behind:
    every later slot then finds it busy, although the lateness it carries was made by
    whatever made it fall behind. So the account carries the lateness forward: the wait of
    a slot for its user is the previous send's lag plus the previous request's duration
    (minus the interval), and it is split in the proportions those were made of. The
    generator's part of a request's duration is its event-loop lag at the reply (the reply
    waited that long for the process to run the user) plus any inline encoding; the rest is
    the server and the network. The cause of a send is the larger part.

    Usage (perf_counter seconds; ``loop_lag_ms`` from bench.scenario.loop_lag)::

        lag_ms, cause = account.on_send(intended_s, started_s)
        ...request...
        account.on_done(started_s, done_s, generator_ms=loop_lag_ms)
    """

    free_at_s: float | None = None  # when the previous request completed; None before the first
    lag_ms: float = 0.0  # the previous send's lag ...
    lag_generator_ms: float = 0.0  # ... and the generator's part of it
    duration_ms: float = 0.0  # the previous request, from its send to its reply being handled ...
    duration_generator_ms: float = 0.0  # ... and the generator's part of that

    def on_send(self, intended_s: float, started_s: float) -> tuple[float, str]:
        """``(send_lag_ms, cause)`` of a send that was due at ``intended_s`` and started at ``started_s``."""
        lag = send_lag_ms(intended_s, started_s)
        wait = wait_generator = 0.0
        if self.free_at_s is not None and self.free_at_s > intended_s:
            wait = min(lag, (self.free_at_s - intended_s) * 1000.0)
            chain = self.lag_ms + self.duration_ms
            if chain > 0:
                wait_generator = wait * min(1.0, (self.lag_generator_ms + self.duration_generator_ms) / chain)
        generator = wait_generator + (lag - wait)  # after the user was free, the lag is the generator's
        self.lag_ms, self.lag_generator_ms = lag, generator
        return lag, (CAUSE_BUSY if lag - generator > generator else CAUSE_IDLE)

    def on_done(self, started_s: float, done_s: float, generator_ms: float) -> None:
        """The request sent at ``started_s`` was handled at ``done_s``; ``generator_ms`` of it was the generator's."""
        self.duration_ms = max(0.0, (done_s - started_s) * 1000.0)
        self.duration_generator_ms = min(self.duration_ms, max(0.0, generator_ms))
        self.free_at_s = done_s


class WallClock:
    """Maps ``time.perf_counter`` readings to unix seconds with one offset taken at creation.

    perf_counter is monotonic and precise, time.time() is what records store; mapping once
    keeps intended times and latencies on one steady timeline.
    """

    def __init__(self) -> None:
        self.offset_s = time.time() - time.perf_counter()

    def unix_s(self, perf_s: float) -> float:
        return perf_s + self.offset_s
