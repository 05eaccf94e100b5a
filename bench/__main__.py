"""``python -m bench`` runs the ``tfsbench`` command line."""

from __future__ import annotations

import sys

from bench.cli import main

sys.exit(main())
