"""tfsbench: benchmark and load-test image models served through the TensorFlow Serving REST API.

The package never imports TensorFlow at import time: the load generator (Locust, the client,
payload encoding) must stay light. Only the exporter and the embedded server load TensorFlow,
and they import it lazily.
"""

from __future__ import annotations

__version__ = "0.1.0"
