"""The load generator watching itself: its process's CPU share, and when it counts as saturated.

A Locust process is single-threaded (one gevent loop): near 100 % of a core its latencies include
its own queueing, so the numbers measure the client, not the server.
"""

from __future__ import annotations

from collections import deque

import psutil

CPU_SAMPLE_S = 1.0
CPU_WINDOW_SAMPLES = 5  # saturation is judged on the mean over this many samples (5 s)


class CpuMonitor:
    """Samples this process's CPU use and flags saturation (mean over a window above a threshold).

    100 % is one core: a Locust process is single-threaded, so near 100 % it measures itself.
    """

    def __init__(self, threshold_pct: float, window: int = CPU_WINDOW_SAMPLES) -> None:
        self.threshold_pct = threshold_pct
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # first call primes the counter
        self._window: deque[float] = deque(maxlen=window)
        self.samples: list[float] = []
        self.max_window_pct = 0.0
        self.saturated = False

    def sample(self) -> bool:
        """Take one sample; True exactly when this sample makes the process count as saturated."""
        value = self._process.cpu_percent(None)
        self.samples.append(value)
        self._window.append(value)
        if len(self._window) == self._window.maxlen:
            mean = sum(self._window) / len(self._window)
            self.max_window_pct = max(self.max_window_pct, mean)
            if mean > self.threshold_pct and not self.saturated:
                self.saturated = True
                return True
        return False

    def finish(self) -> bool:
        """At the end of a run shorter than one window, judge the samples there are.

        True exactly when that makes the process count as saturated.
        """
        if self.max_window_pct or len(self.samples) < 2 or self.saturated:
            return False
        self.max_window_pct = self.mean_pct
        if self.max_window_pct > self.threshold_pct:
            self.saturated = True
            return True
        return False

    @property
    def mean_pct(self) -> float:
        return sum(self.samples) / len(self.samples) if self.samples else 0.0
