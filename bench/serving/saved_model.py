"""One loaded SavedModel version: its signatures, their input specs, the metadata JSON, and running them.

TensorFlow is imported when a version loads, never at import time.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bench.api_names import DEFAULT_SIGNATURE
from bench.payloads.specs import InputSpec, short_dtype
from bench.serving.status import CODE_NAMES, ServingError

__all__ = ["LoadedVersion"]


class LoadedVersion:
    """A loaded SavedModel version: signatures, their input specs and the metadata JSON."""

    def __init__(self, name: str, version: int, path: Path) -> None:
        # lazy: TensorFlow (seconds and hundreds of MB) only in a process that loads a model
        import tensorflow as tf
        from google.protobuf import json_format
        from tensorflow.core.framework import types_pb2
        from tensorflow.core.protobuf import saved_model_pb2

        self.name = name
        self.version = version
        self.path = path
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString((path / "saved_model.pb").read_bytes())
        meta = proto.meta_graphs[0]
        # SignatureDefMap (tensorflow_serving/apis) is {signature_def: map<string, SignatureDef>}.
        self.signature_map_json: dict[str, Any] = {
            "signature_def": {
                key: json_format.MessageToDict(
                    sig, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
                )
                for key, sig in meta.signature_def.items()
            }
        }
        self.method_names = {key: sig.method_name for key, sig in meta.signature_def.items()}
        self.signature_text = {key: str(sig) for key, sig in meta.signature_def.items()}
        self.output_counts = {key: len(sig.outputs) for key, sig in meta.signature_def.items()}
        self.inputs: dict[str, dict[str, InputSpec]] = {}
        self._shape_free: set[tuple[str, str]] = set()
        self.output_names: dict[str, list[str]] = {}
        for key, sig in meta.signature_def.items():
            self.inputs[key] = {
                alias: InputSpec(
                    alias,
                    short_dtype(types_pb2.DataType.Name(info.dtype)),
                    tuple(None if d.size < 0 else d.size for d in info.tensor_shape.dim),
                )
                for alias, info in sig.inputs.items()
            }
            self.output_names[key] = sorted(sig.outputs)
            self._shape_free |= {(key, alias) for alias, info in sig.inputs.items() if info.tensor_shape.unknown_rank}
        self._module = tf.saved_model.load(str(path))
        self._functions = dict(self._module.signatures)
        self._tf = tf

    def signature_inputs(self, signature_name: str) -> Mapping[str, InputSpec]:
        """``GetInfoMap``: the input map of a signature, or the reference's 400."""
        name = signature_name or DEFAULT_SIGNATURE
        if name not in self.inputs or name not in self._functions:
            raise ServingError("INVALID_ARGUMENT", f'Serving signature name: "{name}" not found in signature def')
        return self.inputs[name]

    def run(self, signature_name: str, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run a signature (TensorFlow releases the GIL while its kernels run)."""
        tf = self._tf
        function = self._functions[signature_name or DEFAULT_SIGNATURE]
        expected = self.inputs[signature_name or DEFAULT_SIGNATURE]
        if set(tensors) != set(expected):
            sent, need = sorted(tensors), sorted(expected)
            raise ServingError(
                "INVALID_ARGUMENT",
                f"input size does not match signature: {len(sent)}!={len(need)} len({{{','.join(sent)}}}) != "
                f"len({{{','.join(need)}}}). Sent extra: {{{','.join(sorted(set(sent) - set(need)))}}}. "
                f"Missing but required: {{{','.join(sorted(set(need) - set(sent)))}}}.",
            )
        for key, value in tensors.items():
            declared = expected[key].shape
            if (signature_name or DEFAULT_SIGNATURE, key) in self._shape_free:
                continue
            # Checked before the run: some kernels abort the whole process (a failed CHECK) on
            # tensors of the wrong rank, which no client must be able to cause.
            if value.ndim != len(declared) or any(
                d is not None and d != n for d, n in zip(declared, value.shape, strict=True)
            ):
                want = ",".join("?" if d is None else str(d) for d in declared)
                got = ",".join(str(n) for n in value.shape)
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"input tensor {key} has shape [{got}], which the signature's [{want}] does not allow",
                )
        try:
            args = {key: tf.constant(value) for key, value in tensors.items()}
            result = function(**args)
        except tf.errors.OpError as exc:
            raise ServingError(CODE_NAMES.get(exc.error_code, "UNKNOWN"), exc.message.split("\n")[0]) from None
        except (TypeError, ValueError) as exc:
            # The concrete function refuses tensors that do not fit the signature before running;
            # tensorflow/serving would fail inside the graph with INVALID_ARGUMENT as well.
            raise ServingError("INVALID_ARGUMENT", " ".join(str(exc).split())[:2000]) from None
        return {key: value.numpy() for key, value in result.items()}

    def warm_up(self) -> None:
        """Run each numeric signature once on zeros, so the first request pays no tracing cost."""
        for key, specs in self.inputs.items():
            if key not in self._functions:
                continue
            tensors = {}
            for alias, spec in specs.items():
                if spec.dtype == "string" or any(d is None for d in spec.shape[1:]):
                    break
                dims = tuple(1 if d is None else d for d in spec.shape)
                tensors[alias] = np.zeros(dims, dtype=self._tf.dtypes.as_dtype(spec.dtype).as_numpy_dtype)
            else:
                self.run(key, tensors)
