"""The reference model exporter: a SavedModel in TensorFlow Serving's version layout.

``export_model`` reproduces what the seed article's ``estimator.export_savedmodel`` call wrote
(a ``serving_default`` predict signature over a uint8 placeholder keyed ``examples``) with
today's TensorFlow, which no longer has ``tf.estimator``. See ``export.saved_model``.
"""

from __future__ import annotations

from export.saved_model import SIZES, ExportResult, export_model

__all__ = ["SIZES", "ExportResult", "export_model"]
