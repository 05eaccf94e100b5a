"""``tfsbench serve`` as a child process on an ephemeral loopback port, for tests that need real
signals, resource limits or the process's own RSS and thread count."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, cast

from tests.helpers.paths import REPO


class ServeProcess:
    """``with ServeProcess(base, "--flag=value") as served:`` -> ``served.port``, ``served.proc``,
    ``served.log()`` (its stderr so far). Killed on exit if it is still running."""

    def __init__(self, model_base_path: Path, *flags: str, log_path: Path) -> None:
        self.log_path = log_path
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        self._stderr = log_path.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "bench", "serve", "--port", "0", "--rest_api_port", "0",
                "--model_name", "classifier", "--model_base_path", str(model_base_path), *flags,
            ],
            stdout=subprocess.PIPE, stderr=self._stderr, text=True, cwd=REPO, env=env,
        )  # fmt: skip
        self.port = self._wait_listening()

    def _wait_listening(self) -> int:
        deadline = time.monotonic() + 120
        line = ""
        while time.monotonic() < deadline and "listening on" not in line:
            line = cast(IO[str], self.proc.stdout).readline()  # stdout=PIPE: never None
            if not line and self.proc.poll() is not None:
                self.stop()
                raise AssertionError(f"serve exited {self.proc.returncode}: {self.log()[-2000:]}")
        return int(line.strip().rsplit(":", 1)[1])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.log():
            assert time.monotonic() < deadline, f"{text!r} never logged: {self.log()[-2000:]}"
            time.sleep(0.1)

    def rss_bytes(self) -> int:
        fields = Path(f"/proc/{self.proc.pid}/status").read_text().split("\n")
        return next(int(f.split()[1]) * 1024 for f in fields if f.startswith("VmRSS:"))

    def threads(self) -> int:
        return sum(1 for _ in Path(f"/proc/{self.proc.pid}/task").iterdir())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
