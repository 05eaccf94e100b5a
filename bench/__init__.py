"""tfsbench: benchmark and load-test image models served through the TensorFlow Serving REST API.

The package never imports TensorFlow at import time: the load generator (Locust, the client,
payload encoding) must stay light. Only the exporter and the embedded server load TensorFlow,
and they import it lazily.
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"

# The checkout holding bench/, locustfiles/ and docker/ (an editable install runs from it).
SOURCE_ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = SOURCE_ROOT / "locustfiles" / "predict.py"
