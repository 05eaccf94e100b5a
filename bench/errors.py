"""Errors that tfsbench raises on purpose.

The hierarchy::

    BenchError                 anything the CLI shows as one line and a non-zero exit
    ├── ConfigError            bad arguments, files or options (exit code 2)
    ├── ModelError             a model that cannot be exported, found or loaded
    ├── ServerError            a server that cannot be reached or answered with an error
    │   └── PredictError       a TF Serving error body (status code and message kept)
    ├── ResultsError           a run directory that cannot be read or written
    └── DockerError            the Docker engine, image or container failed

Errors from libraries underneath (requests, TensorFlow, docker) are translated at the
boundary with ``raise ... from exc`` so the cause stays visible in debug output.
"""

from __future__ import annotations


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


class DockerError(BenchError):
    """The Docker engine, image or container failed."""
