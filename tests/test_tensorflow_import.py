"""TensorFlow's start-up chatter is dropped from stderr; anything else written meanwhile is kept."""

from __future__ import annotations

import subprocess
import sys

from bench.tensorflow_import import is_start_up_chatter
from tests.helpers.paths import REPO

_SCRIPT = """
import os
from bench.tensorflow_import import _stderr_without_chatter, import_tensorflow
with _stderr_without_chatter():
    os.write(2, b"E1202 12:00:00.000000 1 op_kernel.cc:1] a real error\\n")
tf = import_tensorflow()
assert tf.constant(2).numpy() + 1 == 3
print("ok")
"""


def test_importing_tensorflow_leaves_stderr_clean_but_keeps_real_errors() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    assert proc.stderr.splitlines() == ["E1202 12:00:00.000000 1 op_kernel.cc:1] a real error"]


def test_the_chatter_pattern() -> None:
    assert is_start_up_chatter(
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    )
    assert is_start_up_chatter(b"I0000 00:00:1796215326.891209   24711 port.cc:153] oneDNN custom operations are on.\n")
    assert is_start_up_chatter(
        b"E0000 00:00:1796215341.668723 24711 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n"
    )
    assert not is_start_up_chatter(b"E0000 00:00:1796215341.668723 24711 op_kernel.cc:1] Invalid argument: shape\n")
    assert not is_start_up_chatter(b"Traceback (most recent call last):\n")
