"""Load-generating processes that die with the sweep that started them.

``tfsbench sweep`` and ``tfsbench capacity`` start Locust with :data:`PARENT_PID_ENV` set to
their own process id. Each Locust process of that run (the master, and the workers it forks for
``--processes``) asks the kernel for SIGTERM when its parent goes, so a sweep killed with
SIGKILL leaves no generator loading the server until its run time ends; SIGTERM lets Locust
close its records whole. A Locust started by hand (no variable) is left as it is.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PARENT_PID_ENV = "TFSBENCH_PARENT_PID"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(forked_worker: bool) -> bool:
    """Arrange SIGTERM on the parent's death; True if arranged (Linux, started by a sweep).

    A ``forked_worker``'s parent is the Locust master, anyone else's is the sweep named in the
    environment. If that parent is already gone (it died before this process got here), this
    process stops now instead of waiting for a signal that will never come.
    """
    expected = os.environ.get(PARENT_PID_ENV, "")
    if not expected.isdigit() or not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        return False
    parent = os.getppid()
    # Orphans are re-parented to PID 1, but a sweep may itself be PID 1 (a container's command).
    gone = parent == 1 if forked_worker else parent != int(expected)
    if gone:
        os.kill(os.getpid(), signal.SIGTERM)
    return True
