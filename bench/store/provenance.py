"""What a run ran on, for meta.json: package versions, the git revision, the machine.

Anything that cannot be collected (no git, no /proc) is recorded as an ``error`` entry or None
instead of failing the run. Versions are looked up without importing the packages (TensorFlow in
particular must stay out of the load-generator side).
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import SOURCE_ROOT, __version__

# Distributions whose versions change results; looked up without importing them (TensorFlow
# in particular must not be imported by the load-generator side).
TRACKED_PACKAGES = (
    "locust",
    "gevent",
    "numpy",
    "pandas",
    "orjson",
    "requests",
    "urllib3",
    "matplotlib",
    "pillow",
    "tensorflow-cpu",
    "tensorflow",
)


def package_versions() -> dict[str, str | None]:
    """Installed versions of tfsbench, Python and the packages that shape results (None if absent)."""
    versions: dict[str, str | None] = {"tfsbench": __version__, "python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_info(repo: Path | None = None) -> dict[str, Any]:
    """``{"revision", "dirty"}`` of the checkout tfsbench runs from, or ``{"error": ...}``."""
    repo = repo or SOURCE_ROOT
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        return {"revision": None, "dirty": None, "error": f"git unavailable: {str(detail).strip()[:200]}"}
    return {"revision": rev, "dirty": bool(status.strip())}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_info() -> dict[str, Any]:
    """Host name, OS, CPU model, logical CPUs (and those this process may use), memory in bytes."""
    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "memory_bytes": _memory_bytes(),
        "python_executable": Path(sys.executable).name,
    }


def collect_environment() -> dict[str, Any]:
    """The environment part of meta.json: versions, git, machine."""
    return {"versions": package_versions(), "git": git_info(), "machine": machine_info()}
