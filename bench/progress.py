"""Progress on stderr for the long commands (sweep, capacity, codecs): ``[######......] 3/12 label``.

On a terminal, :meth:`Progress.show` redraws one live line in place; :meth:`Progress.line` writes a
permanent line (replacing the live one). On a stream that is not a terminal (a log file, CI, a
test) only the permanent lines are written, so logs stay readable::

    progress = Progress(total=12, unit="cells")
    progress.show("b=16 row-orjson")        # live only
    progress.step()
    progress.line("b=16 row-orjson: done")  # [##....] 1/12 cells b=16 row-orjson: done
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """A bar over ``total`` steps; ``unit`` names them in the count (``3/12 cells``)."""

    def __init__(self, total: int, stream: TextIO | None = None, *, width: int = 24, unit: str = "") -> None:
        self.total = total
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.unit = unit
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self._live_width = 0

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def bar(self) -> str:
        filled = int(self.width * min(self.done, self.total) / max(1, self.total))
        count = f"{self.done}/{self.total}" + (f" {self.unit}" if self.unit else "")
        return f"[{'#' * filled}{'.' * (self.width - filled)}] {count}"

    def step(self, steps: int = 1) -> None:
        self.done += steps

    def show(self, label: str) -> None:
        """Redraw the live line (terminals only)."""
        if not self.live:
            return
        text = f"{self.bar()} {label}"
        self.stream.write("\r" + text.ljust(self._live_width))
        self._live_width = len(text)
        self.stream.flush()

    def line(self, label: str) -> None:
        """A permanent line: the bar and ``label``."""
        text = f"{self.bar()} {label}"
        if self.live and self._live_width:
            text = "\r" + text.ljust(self._live_width)
            self._live_width = 0
        self.stream.write(text + "\n")
        self.stream.flush()
