"""Errors that tfsbench raises on purpose.

The hierarchy::

    BenchError                 anything the CLI shows as one line and a non-zero exit
    ├── ConfigError            bad arguments, files or options (exit code 2)
    ├── ModelError             a model that cannot be exported, found or loaded
    ├── ServerError            a server that cannot be reached or answered with an error
    │   └── PredictError       a TF Serving error body (status code and message kept)
    ├── ResultsError           a run directory that cannot be read or written
    │   └── DiskFullError      the disk (or a file-size limit) ran out while writing results
    └── DockerError            the Docker engine, image or container failed

Errors from libraries underneath (requests, TensorFlow, docker) are translated at the
boundary with ``raise ... from exc`` so the cause stays visible in debug output.
"""

from __future__ import annotations

import errno


class BenchError(Exception):
    """Base class: an expected failure with a message meant for the user."""

    exit_code = 1


class ConfigError(BenchError):
    """Bad arguments, files or options."""

    exit_code = 2


class ModelError(BenchError):
    """A model that cannot be exported, found or loaded."""


class ServerError(BenchError):
    """A server that cannot be reached, or that answered with something unexpected."""


class PredictError(ServerError):
    """A TF Serving error response: HTTP status and the server's own message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class ResultsError(BenchError):
    """A run directory that cannot be read or written."""


class DiskFullError(ResultsError):
    """No space left (ENOSPC, EDQUOT, or EFBIG from a file-size limit) while writing results.

    Raised only after what was written before stays whole: no partial row, no stray temp file.
    """


# The errnos that mean "the disk is full" to a writer: out of blocks, out of quota, over RLIMIT_FSIZE.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


# How a Locust process of ours says "stopped: records could not be written, the disk is full".
DISK_FULL_EXIT_CODE = 28  # ENOSPC's number on Linux


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


class DockerError(BenchError):
    """The Docker engine, image or container failed."""
