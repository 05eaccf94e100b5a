"""What one load-generating process shares between its users: payloads, records, CPU monitor, schedule.

Per process (local runner, or each worker with ``--processes N`` / ``--worker``), one
:class:`Scenario` is built at test start from the options (the master's values, which Locust
ships to its workers with each spawn message): pre-encoded payload pools for every (batch size,
encoding) cell, where the records go (a local runner's own file; a worker's relay to its
master, bench.scenario.relay: a worker writes no file), the load generator watching itself (CPU
monitor, event-loop lag), and every user's open-model schedule, so that at the stop the sends
that were due but never answered can be counted (the side-car's ``unanswered_by_cell``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from bench.errors import ResultsError
from bench.payloads.encodings import Encoding
from bench.payloads.pool import PayloadPool
from bench.payloads.tensors import Batch
from bench.scenario.cpu_monitor import CPU_SAMPLE_S, CPU_WINDOW_SAMPLES, CpuMonitor
from bench.scenario.loop_lag import LoopLag, LoopWatch
from bench.scenario.options import ScenarioConfig, Step
from bench.scenario.relay import RecordRelay, process_name
from bench.scenario.schedule import Arrival, UserSchedule, WallClock, global_user_index
from bench.scenario.signature_inputs import payload_sources
from bench.store.load_stats import LoadStats, time_bins, write_load_stats
from bench.store.records import RecordWriter, RequestRecord


@dataclass
class CellPayloads:
    """Pre-encoded bodies for one (batch, encoding), or raw images to encode inline."""

    batch: int
    encoding: Encoding
    pool: PayloadPool | None
    images: list[np.ndarray | Batch]
    input_name: str | None
    next_index: int = 0

    def body(self, inline: bool) -> tuple[bytes, float, dict[str, str]]:
        """``(body, encode_us, headers)``; inline encodes now (the caller's timer is running)."""
        if not inline:
            assert self.pool is not None
            payload = self.pool.next()
            return payload.body, payload.encode_us, payload.headers
        images = self.images[self.next_index % len(self.images)]
        self.next_index += 1
        start = time.perf_counter()
        body = self.encoding.encode(images, self.input_name)
        return body, (time.perf_counter() - start) * 1e6, self.encoding.headers()


class Scenario:
    """Everything one load-generating process shares between its users."""

    def __init__(
        self,
        config: ScenarioConfig,
        *,
        users_total: int,
        t0_s: float,
        worker_index: int = 0,
        workers: int = 1,
        relay: RecordRelay | None = None,
    ) -> None:
        self.config = config
        self.users_total = max(users_total, 1)
        self.t0_s = t0_s  # unix seconds of the test start (the master's clock), for shape steps
        # This process's place among the load-generating processes: constant arrivals
        # interleave the users of every process on one slot grid (see user_index).
        self.workers = max(workers, 1)
        self.worker_index = max(worker_index, 0)
        self.wall = WallClock()
        self.epoch_perf_s = t0_s - self.wall.offset_s  # the shared start on this process's perf_counter
        self.warmup_by_cell: dict[str, int] = {}
        self.warnings: list[str] = []
        self.cells = self._build_payloads()
        self.worker_name = process_name()  # the records' worker column
        # A worker's rows travel to its master (relay); only a process on its own writes a file.
        self.relay = relay if config.records else None
        self.records_path = config.records if self.relay is None else None
        self.writer = RecordWriter(self.records_path) if self.records_path else None
        self.cpu = CpuMonitor(config.cpu_warn_pct)
        self.loop_lag = LoopLag()
        self.loop_watch = LoopWatch()
        self.loop_watchers: list[Any] = []  # libev prepare/check watchers feeding loop_watch (hooks)
        self.user_seq = 0
        self.sends_claimed = 0  # predict requests begun, against --max-requests (predict_user.claim_send)
        self.sends_done_told = False  # a worker told its master that its share is sent (hooks.on_sends_done)
        # Each user's current open-model schedule (by spawn index; a new step replaces it).
        self.schedules: dict[int, UserSchedule] = {}
        self.stopping_perf_s: float | None = None
        self.unanswered_by_cell: dict[str, list[list[float]]] = {}
        self.write_failure: str | None = None  # why records stopped being written (disk full)
        self.on_write_failure: Callable[[ResultsError], None] | None = None  # hooks stop the run

    def _build_payloads(self) -> dict[tuple[int, str], CellPayloads]:
        cells = {}
        # Each encoding aimed at its signature, with that signature's batches (bench.scenario.signature_inputs).
        for encoding, source, input_name in payload_sources(self.config):
            name = encoding.name
            for batch in self.config.batch_sizes:
                if self.config.encode_inline:
                    images = [source.batch(batch, i) for i in range(self.config.pool_size)]
                    cells[(batch, name)] = CellPayloads(batch, encoding, None, images, input_name)
                else:
                    pool = PayloadPool.build(encoding, source, batch, self.config.pool_size, input_name=input_name)
                    cells[(batch, name)] = CellPayloads(batch, encoding, pool, [], input_name)
        return cells

    def step(self, now_unix_s: float | None = None) -> Step | None:
        """The current ``--shape-steps`` step (from the test start), or None without steps."""
        if not self.config.steps:
            return None
        elapsed = (time.time() if now_unix_s is None else now_unix_s) - self.t0_s
        index = min(max(int(elapsed // self.config.step_time_s), 0), len(self.config.steps) - 1)
        return self.config.steps[index]

    def arrival_for(self, step: Step | None) -> Arrival:
        if step is not None and step.rate_per_s is not None:
            return replace(self.config.arrival, rate_per_s=step.rate_per_s)
        return self.config.arrival

    def batches_for(self, step: Step | None) -> tuple[tuple[int, int], ...]:
        return ((step.batch, 1),) if step is not None and step.batch is not None else self.config.batches

    def user_index(self, local_index: int) -> int:
        """A user's index among all users of all processes (its slot on the constant-rate grid)."""
        return global_user_index(local_index, self.worker_index, self.workers)

    def cell_for(self, step: Step | None) -> str:
        return step.label(self.config.cell) if step is not None else self.config.cell

    def record(self, record: RequestRecord) -> None:
        if self.relay is not None:
            self.relay.add(record.to_row())
            return
        if self.writer is None or self.writer.closed:
            return
        try:
            self.writer.write(record)
        except ResultsError as exc:
            # The file keeps its whole rows; writing on would only lose more. Stop the run.
            self.writer.close()
            self.write_failure = str(exc)
            sys.stderr.write(f"tfsbench: {exc}; stopping the load\n")
            sys.stderr.flush()
            if self.on_write_failure is not None:
                self.on_write_failure(exc)

    def on_stopping(self) -> None:
        """The run begins to stop (Locust's ``test_stopping``, before users stop): no slot after this is due."""
        if self.stopping_perf_s is None:
            self.stopping_perf_s = time.perf_counter()

    def count_unanswered(self) -> None:
        """After the users stopped: every slot due before the stop that got no recorded answer, per cell.

        Their user was behind (slots never handed out) or was stopped mid-request (the slot
        open). A probe judges the server's rate against the sends that were due, not the wall
        time to its last reply (bench.commands.capacity_probe.probe_result).
        """
        if self.stopping_perf_s is None or not self.schedules:
            return
        times = [s.unanswered_until(self.stopping_perf_s) for s in self.schedules.values()]
        self.schedules.clear()
        owed = np.concatenate(times) if times else np.empty(0)
        if owed.size:
            cell = self.cell_for(self.step(self.wall.unix_s(self.stopping_perf_s)))
            self.unanswered_by_cell[cell] = time_bins(owed + self.wall.offset_s)

    def load_stats(self, finished: bool) -> LoadStats:
        return LoadStats(
            processes=1,
            warmup_by_cell=dict(self.warmup_by_cell),
            client_cpu_pct_max=self.cpu.max_window_pct,
            client_cpu_pct_mean=self.cpu.mean_pct,
            saturated=self.cpu.saturated,
            loop_lag_ms_p99=self.loop_lag.p99_ms,
            loop_lag_ms_max=self.loop_lag.max_ms,
            stopping_unix_s=self.wall.unix_s(self.stopping_perf_s) if self.stopping_perf_s is not None else 0.0,
            unanswered_by_cell=dict(self.unanswered_by_cell),
            warnings=tuple(self.warnings),
            finished=finished,
        )

    def save_load_stats(self, finished: bool) -> None:
        if self.records_path is None:
            return
        try:
            write_load_stats(self.records_path, self.load_stats(finished))
        except ResultsError as exc:
            # The side-car is evidence about the generator, not a record: losing it loses no row.
            sys.stderr.write(f"tfsbench: {exc}\n")

    def on_cpu_sample(self, final: bool = False) -> None:
        if self.cpu.finish() if final else self.cpu.sample():
            window_s = min(len(self.cpu.samples), CPU_WINDOW_SAMPLES) * CPU_SAMPLE_S
            message = (
                f"tfsbench: load generator CPU saturated (worker {self.worker_name}: "
                f"{self.cpu.max_window_pct:.0f}% of a core over {window_s:g} s): "
                "results measure the client, not the server; use more --processes or fewer users"
            )
            self.warnings.append(message)
            sys.stderr.write(message + "\n")
            sys.stderr.flush()
            self.save_load_stats(finished=False)

    def finish_relay(self) -> None:
        """A worker's last batch of this test, with its side-car (after its users stopped)."""
        if self.relay is not None and not self.relay.finished:
            self.relay.finish(self.load_stats(finished=True))

    def close(self, send_late: bool = True) -> None:
        """``send_late``: rows after the final batch go to the master still here (not to the next
        cell's master, when a new test starts on a kept worker)."""
        self.finish_relay()
        if self.relay is not None and send_late:
            self.relay.send_late()
        self.save_load_stats(finished=True)
        if self.writer is not None:
            self.writer.close()
