"""Files of a run replaced whole: readers see the old file or the new one, never half of one.

::

    replace_atomically(run_dir / "summary.csv", lambda tmp: frame.to_csv(tmp, index=False))

The new content goes to a hidden temp file beside the target (same file system, so the rename is
atomic) and is renamed over it. On failure the temp file is removed, so a full disk leaves no
stray ``.name.<pid>.tmp`` behind, and the error is one line: DiskFullError when the disk (or a
file-size limit) ran out, ResultsError otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from bench.errors import DiskFullError, ResultsError, is_disk_full


def replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` for a temp file beside ``path``, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise DiskFullError(f"no space left on {path.parent} for {path.name}") from exc
        raise ResultsError(f"cannot write {path}: {exc.strerror or exc}") from exc
