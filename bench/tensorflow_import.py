"""``import_tensorflow()``: TensorFlow, imported once, without its start-up chatter on stderr.

The ``tensorflow`` wheel (which the official gRPC stubs require, rather than ``tensorflow-cpu``)
logs through absl before its logging is set up, so ``TF_CPP_MIN_LOG_LEVEL`` cannot silence it:
six lines on every command (oneDNN is on, no CUDA driver) and an error when it probes for a GPU
this machine does not have. While TensorFlow loads and lists its devices, stderr goes to a temp
file; afterwards every line that is not that chatter is written back, so real errors still show.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from types import ModuleType

_CHATTER = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|[IW]\d{4} .*"  # absl INFO/WARNING lines (I1202 12:00:00.000000  pid file.cc:N] ...)
    rb"|E\d{4} .*(cuInit|cuda_platform|cuda_executor|CUDA).*)$"
)


def is_start_up_chatter(line: bytes) -> bool:
    return _CHATTER.match(line.rstrip(b"\r\n")) is not None


@contextlib.contextmanager
def _stderr_without_chatter() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = b"".join(line for line in captured if not is_start_up_chatter(line))
            if kept:
                os.write(2, kept)


def import_tensorflow() -> ModuleType:
    """``tensorflow``, loaded (and its devices listed) with the start-up chatter dropped."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _stderr_without_chatter():
        import tensorflow as tf  # lazy: seconds and hundreds of MB, only where a model is made or loaded

        tf.config.list_physical_devices()  # the GPU probe logs its "no CUDA driver" error here
    return sys.modules["tensorflow"]
