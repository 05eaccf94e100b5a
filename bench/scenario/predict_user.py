"""What one simulated user does: its state, its next send on schedule, one checked predict, warm-up.

The locustfile's ``PredictUser`` calls these; nothing here imports Locust or gevent at import time
(``sleep``, the HTTP client and the gRPC session are passed in), so the logic is tested without
Locust. A cell's encoding picks the transport: REST through Locust's HTTP client, gRPC through the
user's :class:`~bench.scenario.grpc_user.GrpcSession`; both fire the same request event.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.scenario import grpc_user
from bench.scenario.options import Step
from bench.scenario.process import CellPayloads, Scenario
from bench.scenario.schedule import LagAccount, UserSchedule
from bench.store.records import RequestRecord
from bench.target.replicas import host_for_user, parse_hosts, replica_name
from bench.target.response_check import check_predict_response

log = logging.getLogger("tfsbench.load")

RECORD_KEY = "tfsbench"  # the request context key that carries a record's fields
# A user whose connection is refused waits before it tries again, doubling up to the cap, so a
# dead server yields a few error rows per user and second instead of thousands that would
# drown the run's measurements; the first answer resets it.
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 1.0


@dataclass
class UserState:
    rng: random.Random
    index: int = 0  # this user's spawn order within its process (0, 1, ...)
    schedule: UserSchedule | None = None
    schedule_key: tuple[Any, ...] = ()
    lag: LagAccount = field(default_factory=LagAccount)  # who made its sends late (open model)
    backoff_s: float = 0.0  # the wait after the last refused connection; 0 while the server answers
    target: str = ""  # host:port of the replica this user sends to (the records' target column)


def new_user_state(scenario: Scenario, host: str = "") -> UserState:
    scenario.user_seq += 1
    return UserState(
        rng=random.Random(hash((os.getpid(), scenario.user_seq, time.time_ns()))),
        index=scenario.user_seq - 1,
        target=replica_name(host) if host else "",
    )


def user_host(host_option: str, spawned: int, scenario: Scenario | None) -> str:
    """The replica a new user sends to: ``--host URL1,URL2,...`` taken in turn by users (bench.target.replicas).

    ``spawned`` is the user's spawn order in this process; its index among all processes' users
    (the one the open model's slots use) decides, so the workers together spread evenly.
    """
    hosts = parse_hosts(host_option)
    if len(hosts) == 1:
        return hosts[0]
    index = scenario.user_index(spawned) if scenario is not None else spawned
    return host_for_user(hosts, index)


def _choose(scenario: Scenario, state: UserState, step: Step | None) -> CellPayloads:
    batches = scenario.batches_for(step)
    if len(batches) == 1:
        batch = batches[0][0]
    else:
        batch = state.rng.choices([b for b, _ in batches], weights=[w for _, w in batches])[0]
    encodings = scenario.config.encodings
    encoding = encodings[0] if len(encodings) == 1 else state.rng.choice(encodings)
    return scenario.cells[(batch, encoding)]


def _intended_send(
    scenario: Scenario, state: UserState, step: Step | None, sleep: Callable[[float], None]
) -> float | None:
    """Sleep until this user's next intended send (open model) and return it; None when closed."""
    arrival = scenario.arrival_for(step)
    if not arrival.is_open:
        return None
    key = (arrival, scenario.users_total)
    if state.schedule is None or state.schedule_key != key:
        state.schedule = UserSchedule(
            arrival,
            scenario.users_total,
            seed=state.rng.getrandbits(64),
            user_index=scenario.user_index(state.index),
            epoch_s=scenario.epoch_perf_s,
        )
        state.schedule_key = key
        scenario.schedules[state.index] = state.schedule  # owed slots are counted at the stop
    intended = state.schedule.next_send()
    wait = state.schedule.wait_s(intended)
    if wait > 0:
        sleep(wait)
    return intended


def claim_send(scenario: Scenario) -> bool:
    """Whether this process may begin one more request under ``--max-requests`` (its share of N).

    Counting sends, not replies, is what ends a cell at N: the requests already in flight when
    the count is reached are the last ones, and each is recorded.
    """
    limit = scenario.config.max_requests
    if limit is None:
        return True
    share = -(-limit // scenario.workers)  # ceil: P processes together send N and at most P-1 more
    if scenario.sends_claimed >= share:
        return False
    scenario.sends_claimed += 1
    return True


def stats_name(batch: int, encoding: str) -> str:
    """Locust's stats entry for a cell: ``predict b=16 row-orjson``."""
    return f"predict b={batch} {encoding}"


def predict_once(
    client: Any,
    scenario: Scenario,
    state: UserState,
    sleep: Callable[[float], None],
    grpc: grpc_user.GrpcSession | None = None,
    request_event: Any = None,
) -> None:
    """One predict request through Locust's FastHttpSession ``client`` (or, for a gRPC encoding,
    the user's ``grpc`` session, firing ``request_event``), checked and recorded.

    Locust's response time is corrected to count from the intended send time (open model) and
    to include inline encoding; its "size" column shows the request body size, so the web UI
    compares cells by payload bytes. The record itself is written by :func:`on_request`.
    """
    step = scenario.step()
    cell = _choose(scenario, state, step)
    intended = _intended_send(scenario, state, step, sleep)
    started = time.perf_counter()
    body, encode_us, headers = cell.body(scenario.config.encode_inline)
    inline_ms = encode_us / 1000.0 if scenario.config.encode_inline else 0.0
    origin = intended if intended is not None else started
    lag_ms, cause = state.lag.on_send(intended, started) if intended is not None else (0.0, "")
    extra_ms = lag_ms + inline_ms
    info: dict[str, Any] = {
        "t_start": scenario.wall.unix_s(origin),
        "batch": cell.batch,
        "encoding": cell.encoding.name,
        "payload_bytes": len(body),
        "encode_us": encode_us,
        "cell": scenario.cell_for(step),
        "send_lag_ms": lag_ms,
        "lag_cause": cause,
        "protocol": cell.encoding.protocol,
        # The replica that answers: the user's own --host replica, or the gRPC target it dials.
        "target": grpc.target if cell.encoding.protocol == "grpc" and grpc is not None else state.target,
    }
    if cell.encoding.protocol == "grpc":
        if grpc is None or request_event is None:
            raise RuntimeError("a gRPC encoding needs the user's gRPC session and Locust's request event")
        _grpc_request(grpc, request_event, cell.batch, body, info, extra_ms)
    else:
        _rest_request(client, scenario, cell.batch, cell.encoding.name, body, headers, info, extra_ms)
    if intended is not None and state.schedule is not None:
        # The record is written (the request event fired as the block closed): the slot is answered.
        state.schedule.finished()
        done = time.perf_counter()
        # Since the loop last idled the reply had arrived and waited for us (inline encoding included).
        state.lag.on_done(started, done, scenario.loop_watch.generator_ms(started, done))
    back_off(state, info.pop("refused", None), sleep)


def _rest_request(
    client: Any,
    scenario: Scenario,
    batch: int,
    encoding: str,
    body: bytes,
    headers: Mapping[str, str],
    info: dict[str, Any],
    extra_ms: float,
) -> None:
    with client.request(
        "POST",
        scenario.config.predict_path,
        name=stats_name(batch, encoding),
        data=body,
        headers=headers,
        catch_response=True,
        context={RECORD_KEY: info},
    ) as response:
        meta = response.request_meta
        content = _content(response)
        info["status"] = int(response.status_code or 0)
        info["response_bytes"] = len(content)
        error = getattr(response, "error", None)
        if info["status"] == 0 or (error is not None and not content):
            response.failure(f"no response: {error}")
        else:
            message = check_predict_response(info["status"], content, batch)
            if message:
                response.failure(message)
            else:
                response.success()
        meta["response_time"] = meta["response_time"] + extra_ms
        meta["response_length"] = len(body)
    # popped by predict_once: the wait after a refused connection
    info["refused"] = getattr(response, "error", None) if info["status"] == 0 else None


def _grpc_request(
    session: grpc_user.GrpcSession, request_event: Any, batch: int, body: bytes, info: dict[str, Any], extra_ms: float
) -> None:
    """One Predict call, timed and reported as Locust's HTTP client reports a request."""
    started = time.perf_counter()
    status, content, error = session.call(body)
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    info["status"] = status
    info["response_bytes"] = len(content)
    message = grpc_user.failure_text(status, error) if status != 200 else grpc_user.check_grpc_response(content, batch)
    request_event.fire(
        request_type="grpc",
        name=stats_name(batch, info["encoding"]),
        response_time=elapsed_ms + extra_ms,
        response_length=len(body),
        response=None,
        context={RECORD_KEY: info},
        exception=grpc_user.failure(message),
    )
    info["refused"] = ConnectionError(error) if status == 0 else None


def is_refused(error: Any) -> bool:
    """A connection the server side refused or dropped before answering (not a timeout: that is latency)."""
    return isinstance(error, ConnectionError) or "refused" in str(error).lower()


def back_off(state: UserState, error: Any, sleep: Callable[[float], None]) -> float:
    """After a refused connection wait (capped, doubling); any answer resets. Returns the wait.

    In the open model the slots that fall due meanwhile are dropped, not sent in a burst after.
    """
    if error is None or not is_refused(error):
        state.backoff_s = 0.0
        return 0.0
    state.backoff_s = min(BACKOFF_MAX_S, state.backoff_s * 2 if state.backoff_s else BACKOFF_FIRST_S)
    sleep(state.backoff_s)
    if state.schedule is not None:
        state.schedule.skip_until(time.perf_counter())
    return state.backoff_s


def _content(response: Any) -> bytes:
    try:
        return bytes(response.content or b"")
    except Exception:  # a broken connection surfaces here; the request already failed
        return b""


def on_request(scenario: Scenario | None, response_time: float, exception: Any, context: Mapping[str, Any]) -> None:
    """Locust ``request`` listener body: turn one of our requests into a record row."""
    info = context.get(RECORD_KEY) if context else None
    if scenario is None or info is None:
        return
    error = "" if exception is None else _one_line(str(exception))
    scenario.record(
        RequestRecord(
            t_start=info["t_start"],
            latency_ms=float(response_time),
            status=info.get("status", 0),
            batch=info["batch"],
            encoding=info["encoding"],
            payload_bytes=info["payload_bytes"],
            encode_us=info["encode_us"],
            response_bytes=info.get("response_bytes", 0),
            error=error,
            cell=info["cell"],
            send_lag_ms=info["send_lag_ms"],
            lag_cause=info.get("lag_cause", ""),
            protocol=info.get("protocol", "rest"),
            worker=scenario.worker_name,
            target=info.get("target", ""),
        )
    )


def _one_line(text: str) -> str:
    # Locust wraps failure messages ("CatchResponseError('...')" in some versions); keep the text.
    return " ".join(text.split())[:500]


def warm_up(base_url: str, scenario: Scenario, state: UserState, grpc: grpc_user.GrpcSession | None = None) -> int:
    """Send ``--warmup`` requests outside Locust's stats and the records; returns how many succeeded."""
    if scenario.config.warmup <= 0:
        return 0
    # lazy: Locust only inside a Locust process (importing it patches the process with gevent)
    from locust.contrib.fasthttp import FastHttpSession
    from locust.event import EventHook

    # Locust's EventHook.__init__ is unannotated.
    session = FastHttpSession(base_url, request_event=EventHook(), user=None)  # type: ignore[no-untyped-call]
    cell_label = scenario.cell_for(scenario.step())
    ok = 0
    for _ in range(scenario.config.warmup):
        cell = _choose(scenario, state, None)
        body, _, headers = cell.body(False) if cell.pool is not None else cell.body(True)
        scenario.warmup_by_cell[cell_label] = scenario.warmup_by_cell.get(cell_label, 0) + 1
        if cell.encoding.protocol == "grpc" and grpc is not None:
            ok += grpc.call(body)[0] == 200
            continue
        # Locust annotates data as str | dict | None; FastHttpSession sends bytes as they are.
        response = session.request(
            "POST",
            scenario.config.predict_path,
            data=body,  # type: ignore[arg-type]
            headers=headers,
        )
        if response.status_code == 200:
            ok += 1
    if ok < scenario.config.warmup:
        log.warning("%d of %d warm-up requests failed", scenario.config.warmup - ok, scenario.config.warmup)
    return ok
