"""``--inputs-file``: a user's own request, replayed: a TF Serving JSON body (row or columnar) or an .npz.

``load_inputs_file(path, specs)`` returns ``{input name: array [rows, ...]}`` for exactly the
signature's inputs, with the signature's dtypes (strings as ``object`` arrays of bytes, from
``{"b64": ...}`` objects or plain text); ``ConfigError`` names what does not fit.
"""

from __future__ import annotations

import base64
import binascii
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.errors import ConfigError
from bench.payloads.specs import InputSpec
from bench.payloads.tensors import REST_DTYPES, numpy_name


def _strings(values: Any, where: str) -> np.ndarray:
    flat = np.asarray(values, dtype=object).ravel()
    out = np.empty(flat.shape, dtype=object)
    for i, value in enumerate(flat):
        if isinstance(value, dict) and set(value) == {"b64"}:
            try:
                out[i] = base64.b64decode(str(value["b64"]), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ConfigError(f"{where}: a b64 value does not decode ({exc})") from None
        elif isinstance(value, str):
            out[i] = value.encode()
        elif isinstance(value, bytes):
            out[i] = value
        else:
            raise ConfigError(f'{where}: expected strings or {{"b64": ...}} objects, got {type(value).__name__}')
    return out.reshape(np.shape(np.asarray(values, dtype=object)))


def _array(values: Any, spec: InputSpec, where: str) -> np.ndarray:
    if spec.dtype == "string":
        return _strings(values, where)
    try:
        array = np.asarray(values, dtype=REST_DTYPES[spec.dtype])
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"{where}: values do not fit {numpy_name(spec.dtype)} ({exc})") from None
    return array


def _columns_from_json(doc: Any, specs: Mapping[str, InputSpec], where: str) -> dict[str, Any]:
    if not isinstance(doc, dict) or ("instances" in doc) == ("inputs" in doc):
        raise ConfigError(f"{where}: expected a TF Serving predict body with 'instances' or 'inputs'")
    names = list(specs)
    if "inputs" in doc:
        inputs = doc["inputs"]
        if isinstance(inputs, dict):
            return dict(inputs)
        if len(names) != 1:
            raise ConfigError(f"{where}: plain 'inputs' but the signature has inputs {', '.join(names)}")
        return {names[0]: inputs}
    rows = doc["instances"]
    if not isinstance(rows, list) or not rows:
        raise ConfigError(f"{where}: 'instances' must be a non-empty list")
    if all(isinstance(row, dict) and set(row) != {"b64"} for row in rows):
        keys = set(rows[0])
        if any(set(row) != keys for row in rows):
            raise ConfigError(f"{where}: instances name different inputs")
        return {key: [row[key] for row in rows] for key in rows[0]}
    if len(names) != 1:
        raise ConfigError(f"{where}: plain instances but the signature has inputs {', '.join(names)}")
    return {names[0]: rows}


def _read(path: Path, specs: Mapping[str, InputSpec]) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"--inputs-file {path} is not a file")
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {name: npz[name] for name in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise ConfigError(f"--inputs-file {path}: not a readable .npz ({exc})") from None
    try:
        doc = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"--inputs-file {path}: not JSON ({exc})") from None
    return _columns_from_json(doc, specs, f"--inputs-file {path}")


def load_inputs_file(path: Path | str, specs: Sequence[InputSpec]) -> dict[str, np.ndarray]:
    """The file's rows per input, checked against the signature's inputs (names, dtypes, shapes)."""
    path = Path(path)
    by_name = {spec.name: spec for spec in specs}
    columns = _read(path, by_name)
    missing = [name for name in by_name if name not in columns]
    extra = [name for name in columns if name not in by_name]
    if missing or extra:
        parts = ([f"lacks {', '.join(missing)}"] if missing else []) + (
            [f"has unknown {', '.join(extra)}"] if extra else []
        )
        raise ConfigError(f"--inputs-file {path} {' and '.join(parts)} (signature inputs: {', '.join(by_name)})")
    out: dict[str, np.ndarray] = {}
    for name, spec in by_name.items():
        where = f"--inputs-file {path} input '{name}'"
        array = _array(columns[name], spec, where)
        if array.ndim == 0 or array.shape[0] == 0:
            raise ConfigError(f"{where}: needs at least one row")
        want = spec.shape[1:]
        got = array.shape[1:]
        if spec.shape and (len(got) != len(want) or any(w not in (None, g) for g, w in zip(got, want, strict=False))):
            shown = ["-1" if w is None else str(w) for w in want]
            raise ConfigError(f"{where}: rows of shape {list(got)}, the signature says [{', '.join(shown)}]")
        out[name] = array
    rows = {name: len(array) for name, array in out.items()}
    if len(set(rows.values())) != 1:
        raise ConfigError(f"--inputs-file {path}: inputs have different row counts {rows}")
    return out
