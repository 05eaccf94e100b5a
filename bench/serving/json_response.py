"""Predict, classify and regress responses and error bodies as tensorflow/serving writes them.

Row format ``{"predictions": ...}`` or columnar ``{"outputs": ...}``, rapidjson's pretty printer
(4-space indent, single-line innermost rows), floats with ``WriteDecimal``'s digits, ``_bytes``
outputs as ``{"b64": ...}``. A port of ``tensorflow_serving/util/json_tensor.cc``'s writer.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence

import numpy as np

from bench.serving.rapidjson import escape_string
from bench.serving.status import invalid_argument


def format_float(value: float, double: bool = False) -> str:
    """``WriteDecimal``: ``%g`` if it round-trips, else 9 (float) / 17 (double) digits; ``.0`` added
    to whole numbers; ``NaN``, ``Infinity``, ``-Infinity``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = f"{value:g}"
    back = float(text) if double else float(np.float32(float(text)))
    if back != value:
        text = f"{value:.17g}" if double else f"{value:.9g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def _scalar_texts(flat: np.ndarray, name: str) -> list[str]:
    kind = flat.dtype
    if kind == np.float32:
        return [format_float(v) for v in flat.tolist()]
    if kind == np.float64:
        return [format_float(v, double=True) for v in flat.tolist()]
    if kind == np.bool_:
        return ["true" if v else "false" for v in flat.tolist()]
    if kind.kind in "iu":
        return [str(v) for v in flat.tolist()]
    as_bytes = name.endswith("_bytes")
    texts = []
    for v in flat.tolist():
        raw = v if isinstance(v, bytes) else str(v).encode()
        if as_bytes:
            texts.append('{"b64": ' + escape_string(base64.b64encode(raw).decode()) + "}")
        else:
            texts.append(escape_string(raw.decode("utf-8", "replace")))
    return texts


class _PrettyOut:
    """rapidjson ``PrettyWriter`` output for tensors (4-space indent), as ``MakeJsonFromTensors``."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def tensor(self, texts: list[str], shape: tuple[int, ...], depth: int, single_line: bool, start: int = 0) -> int:
        """Write a nested list of ``texts`` for ``shape``; returns the next flat offset."""
        if not shape:
            self.parts.append(texts[start])
            return start + 1
        if single_line:
            self.parts.append(self._single(texts, shape, start))
            return start + int(np.prod(shape))
        pad = "\n" + " " * (4 * (depth + 1))
        self.parts.append("[")
        for i in range(shape[0]):
            if i:
                self.parts.append(",")
            self.parts.append(pad)
            start = self.tensor(texts, shape[1:], depth + 1, False, start)
        if shape[0]:
            self.parts.append("\n" + " " * (4 * depth))
        self.parts.append("]")
        return start

    def _single(self, texts: list[str], shape: tuple[int, ...], start: int) -> str:
        if len(shape) == 1:
            return "[" + ", ".join(texts[start : start + shape[0]]) + "]"
        step = int(np.prod(shape[1:]))
        return "[" + ", ".join(self._single(texts, shape[1:], start + i * step) for i in range(shape[0])) + "]"


def encode_predict_response(outputs: Mapping[str, np.ndarray], row_format: bool) -> bytes:
    """``MakeJsonFromTensors``: ``{"predictions": ...}`` (row) or ``{"outputs": ...}`` (columnar).

    Raises ``ServingError`` for the row-format batch checks (rank-0 output, batch size < 1,
    outputs of different batch sizes).
    """
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    arrays = {name: np.asarray(outputs[name]) for name in names}
    texts = {name: _scalar_texts(arrays[name].reshape(-1), name) for name in names}
    out = _PrettyOut()
    if row_format:
        batch = 0
        for name in names:
            shape = arrays[name].shape
            if not shape:
                raise invalid_argument(f"Tensor name: {name} has no shape information ")
            if shape[0] < 1:
                raise invalid_argument(f"Tensor name: {name} has invalid batch size: {shape[0]}")
            if batch and shape[0] != batch:
                raise invalid_argument(
                    f"Tensor name: {name} has inconsistent batch size: {shape[0]} expecting: {batch}"
                )
            batch = shape[0]
        out.parts.append('{\n    "predictions": [')
        if len(names) == 1:
            # tensorflow/serving switches to single-line arrays before each row's prefix, so
            # single-output rows share one line: [[...], [...]\n    ]
            name = names[0]
            shape = arrays[name].shape[1:]
            size = int(np.prod(shape))
            for row in range(batch):
                out.parts.append(", " if row else "")
                out.tensor(texts[name], shape, 0, True, row * size)
        else:
            for row in range(batch):
                out.parts.append(("," if row else "") + "\n        {")
                for k, name in enumerate(names):
                    shape = arrays[name].shape[1:]
                    size = int(np.prod(shape))
                    out.parts.append(("," if k else "") + "\n            " + escape_string(name) + ": ")
                    out.tensor(texts[name], shape, 0, True, row * size)
                out.parts.append("\n        }")
        out.parts.append("\n    ]\n}")
    else:
        out.parts.append('{\n    "outputs": ')
        if len(names) > 1:
            out.parts.append("{")
            for k, name in enumerate(names):
                out.parts.append(("," if k else "") + "\n        " + escape_string(name) + ": ")
                out.tensor(texts[name], arrays[name].shape, 2, False)
            out.parts.append("\n    }")
        else:
            out.tensor(texts[names[0]], arrays[names[0]].shape, 1, False)
        out.parts.append("\n}")
    return "".join(out.parts).encode("utf-8", "replace")


def encode_error(message: str) -> bytes:
    """``MakeJsonFromStatus``: ``{"error": "<message>"}`` pretty-printed; always valid UTF-8 JSON."""
    text = message.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return ('{\n    "error": ' + escape_string(text) + "\n}").encode()


def encode_classification_result(result: Sequence[Sequence[tuple[bytes, float]]]) -> bytes:
    """``MakeJsonFromClassificationResult``: ``{"results": [[["label", score], ...], ...]}``.

    Each example's classes go on one line (the writer switches to single-line arrays before
    each example), so the pretty printer's newline comes only before the outer ``]``.
    """
    if not result:
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    rows = []
    for classes in result:
        pairs = (
            f"[{escape_string(label.decode('utf-8', 'replace'))}, {format_float(score)}]" for label, score in classes
        )
        rows.append("[" + ", ".join(pairs) + "]")
    return ('{\n    "results": [' + ", ".join(rows) + "\n    ]\n}").encode("utf-8", "replace")


def encode_regression_result(result: Sequence[float]) -> bytes:
    """``MakeJsonFromRegressionResult``: ``{"results": [v1, v2, ...]}`` on one line."""
    if not result:
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    return ('{\n    "results": [' + ", ".join(format_float(v) for v in result) + "]\n}").encode()
