"""One loaded SavedModel version, run the way tensorflow_model_server runs it: a session over the
``serve`` MetaGraph, fed and fetched by the tensor names its SignatureDefs give.

``SavedModelBundle`` in C++ is a ``MetaGraphDef`` plus a ``Session``; here TensorFlow's v1 loader
restores the ``serve`` MetaGraph (variables, assets, init op) into its own graph and session, for
TF1 and TF2 exports alike. A signature's declared shapes are metadata, not a check: a request is
accepted or rejected by the graph (``{"instances": [2.0, 3.0, 4.0]}`` to half_plus_two's
``x: [-1,1]`` gives ``[3.0, 3.5, 4.0]``, as upstream). Each distinct (feeds, fetches) set becomes
one session callable (``Session::MakeCallable``), so a run is a single call into TensorFlow,
which releases the GIL while its kernels run::

    loaded = LoadedVersion("default", 123, Path("half_plus_two/00000123"))
    call = loaded.predict_call("serving_default", {"x": np.array([2.0], np.float32)})
    loaded.run_session(call.fetches, call.feeds)       # {"y:0": array([3.], dtype=float32)}

The one input that would abort the process instead of failing (a convolution fed below rank 4)
is refused before the run by ``bench.serving.kernel_guard``. TensorFlow is imported when a
version loads, never at import time.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.api_names import DEFAULT_SIGNATURE
from bench.payloads.specs import InputSpec, short_dtype
from bench.serving.kernel_guard import ConvolutionRankGuard
from bench.serving.status import CODE_NAMES, ServingError, invalid_argument
from bench.tensorflow_import import import_tensorflow

__all__ = ["CLASSIFY_METHOD", "PREDICT_METHOD", "LoadedVersion", "SessionCall", "Signature"]

SERVE_TAG = "serve"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


@dataclass(frozen=True)
class Signature:
    """One SignatureDef: aliases -> tensor names, the inputs' specs, and its text for messages."""

    name: str
    method_name: str
    inputs: Mapping[str, InputSpec]  # alias -> spec (what the REST decoders convert against)
    input_tensors: Mapping[str, str]  # alias -> tensor name to feed
    output_tensors: Mapping[str, str]  # alias -> tensor name to fetch
    defaults: Mapping[str, np.ndarray]  # alias -> value fed when a request leaves it out
    text: str  # SignatureDef.DebugString(), quoted by the classify/regress errors


@dataclass(frozen=True)
class SessionCall:
    """What a Session::Run gets: tensors by feed name, fetch names, and the alias of each fetch."""

    feeds: Mapping[str, np.ndarray]
    fetches: tuple[str, ...]
    aliases: tuple[str, ...]


def _sorted_keys(keys: Sequence[str] | Mapping[str, object]) -> str:
    return ",".join(sorted(keys))


class LoadedVersion:
    """A loaded SavedModel version: its ``serve`` MetaGraph, session, signatures and metadata JSON."""

    def __init__(self, name: str, version: int, path: Path, tags: Sequence[str] = (SERVE_TAG,)) -> None:
        tf = import_tensorflow()  # seconds and hundreds of MB, only in a process that loads a model
        # lazy: TensorFlow is loaded by now
        from google.protobuf import json_format
        from tensorflow.core.framework import types_pb2
        from tensorflow.python.saved_model import loader_impl

        self.name = name
        self.version = version
        self.path = path
        self._tf = tf
        graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=graph)
        try:
            with graph.as_default():
                # SavedModelLoader.load is the v1 loader without its deprecation warning.
                meta = loader_impl.SavedModelLoader(str(path)).load(self._session, list(tags))
        except OSError as exc:  # no saved_model.pb / .pbtxt
            self._session.close()
            raise ServingError(
                "NOT_FOUND", f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {path}"
            ) from exc
        except RuntimeError as exc:  # no MetaGraph with these tags
            self._session.close()
            raise ServingError(
                "NOT_FOUND",
                f"Could not find meta graph def matching supplied tags: {{ {' '.join(tags)} }}. To inspect "
                "available tag-sets in the SavedModel, please use the SavedModel CLI: `saved_model_cli`",
            ) from exc
        # SignatureDefMap (tensorflow_serving/apis) is {signature_def: map<string, SignatureDef>}.
        self.signature_map_json: dict[str, Any] = {
            "signature_def": {
                key: json_format.MessageToDict(
                    sig, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
                )
                for key, sig in meta.signature_def.items()
            }
        }
        self.signatures: dict[str, Signature] = {}
        for key, sig in meta.signature_def.items():
            self.signatures[key] = Signature(
                name=key,
                method_name=sig.method_name,
                inputs={
                    alias: InputSpec(
                        alias,
                        short_dtype(types_pb2.DataType.Name(info.dtype)),
                        tuple(None if d.size < 0 else d.size for d in info.tensor_shape.dim),
                    )
                    for alias, info in sig.inputs.items()
                },
                input_tensors={alias: info.name for alias, info in sig.inputs.items()},
                output_tensors={alias: info.name for alias, info in sig.outputs.items()},
                defaults={alias: tf.make_ndarray(value) for alias, value in sig.defaults.items()},
                text=str(sig),
            )
        self._guard = ConvolutionRankGuard(meta)
        self._callables: dict[tuple[tuple[str, ...], tuple[str, ...]], Any] = {}
        self._callables_lock = threading.Lock()

    @property
    def inputs(self) -> dict[str, Mapping[str, InputSpec]]:
        """Signature name -> its input specs."""
        return {key: sig.inputs for key, sig in self.signatures.items()}

    @property
    def guarded_inputs(self) -> dict[str, tuple[str, ...]]:
        """Fed tensor names refused below rank 4 -> the convolutions they reach (``kernel_guard``)."""
        return self._guard.guarded

    def signature_inputs(self, signature_name: str) -> Mapping[str, InputSpec]:
        """``GetInfoMap`` of the REST handler: a signature's inputs, or the reference's 400."""
        name = signature_name or DEFAULT_SIGNATURE
        signature = self.signatures.get(name)
        if signature is None:
            raise invalid_argument(f'Serving signature name: "{name}" not found in signature def')
        return signature.inputs

    # -- predict (predict_util.cc) ------------------------------------------------------------------

    def predict_signature(
        self, signature_name: str, aliases: Sequence[str] | Mapping[str, object], *, method_name_check: bool = False
    ) -> Signature:
        """``RunPredict`` up to ``VerifyRequestInputsSize``: the signature a predict request names
        (``aliases``: its input aliases), or the first error of the reference's check order."""
        name = signature_name or DEFAULT_SIGNATURE
        signature = self.signatures.get(name)
        if signature is None:
            raise ServingError("FAILED_PRECONDITION", f'Serving signature key "{name}" not found.')
        if method_name_check and signature.method_name not in (PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD):
            raise ServingError(
                "INTERNAL",
                f"Expected prediction signature method_name to be one of {{{PREDICT_METHOD}, {CLASSIFY_METHOD}, "
                f"{REGRESS_METHOD}}}. Was: {signature.method_name}",
            )
        expected = signature.input_tensors
        if len(aliases) > len(expected) or (len(aliases) < len(expected) and not signature.defaults):
            extra = sorted(set(aliases) - set(expected))
            missing = sorted(set(expected) - set(aliases))
            raise invalid_argument(
                f"input size does not match signature: {len(aliases)}!={len(expected)} "
                f"len({{{_sorted_keys(aliases)}}}) != len({{{_sorted_keys(expected)}}}). "
                f"Sent extra: {{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}."
            )
        return signature

    def predict_call(
        self,
        signature_name: str,
        tensors: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
        *,
        method_name_check: bool = False,
    ) -> SessionCall:
        """``PreProcessPrediction``: the session call a predict request means, or its error."""
        signature = self.predict_signature(signature_name, tensors, method_name_check=method_name_check)
        expected = signature.input_tensors
        for alias in tensors:
            if alias not in expected:
                raise invalid_argument(
                    f"input tensor alias not found in signature: {alias}. "
                    f"Inputs expected to be in the set {{{_sorted_keys(expected)}}}."
                )
        feeds: dict[str, np.ndarray] = {}
        for alias in sorted(expected):
            if alias in tensors:
                feeds[expected[alias]] = tensors[alias]
            elif alias in signature.defaults:
                feeds[expected[alias]] = signature.defaults[alias]
            else:
                raise invalid_argument(
                    f"Signature input alias: {alias} not found in request and no default value provided. "
                    f"Inputs expected to be in the set {{{_sorted_keys(expected)}}}."
                )
        outputs = signature.output_tensors
        aliases: list[str] = []
        for alias in output_filter:
            if alias not in outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {alias} Outputs expected to be in the set "
                    f"{{{_sorted_keys(outputs)}}}."
                )
            if alias in aliases:
                raise invalid_argument(f"duplicate output tensor alias: {alias}")
            aliases.append(alias)
        if not aliases:
            aliases = sorted(outputs)
        self._check_feed_dtypes(signature, feeds)
        return SessionCall(feeds, tuple(dict.fromkeys(outputs[a] for a in aliases)), tuple(aliases))

    def _check_feed_dtypes(self, signature: Signature, feeds: Mapping[str, np.ndarray]) -> None:
        """``DirectSession::Run``'s feed check, first thing in the run: each fed value (in feed
        order) must have its placeholder's dtype. REST decodes to the signature's dtypes; a
        TensorProto carries its own, and a session callable words the error differently."""
        aliases = {tensor: alias for alias, tensor in signature.input_tensors.items()}
        for index, (name, value) in enumerate(feeds.items()):
            spec = signature.inputs.get(aliases.get(name, ""))
            if spec is None:
                continue
            got = self._dtype_name(value.dtype)
            if got != spec.dtype:
                raise invalid_argument(f"Expects arg[{index}] to be {spec.dtype} but {got} is provided")

    def _dtype_name(self, dtype: np.dtype[Any]) -> str:
        """TensorFlow's short name (``DataTypeString``) of a numpy dtype: float, uint8, string..."""
        if dtype.kind in ("O", "S", "U"):
            return "string"
        from tensorflow.core.framework import types_pb2  # lazy: TensorFlow is loaded by now

        return short_dtype(types_pb2.DataType.Name(self._tf.dtypes.as_dtype(dtype).as_datatype_enum))

    def run(self, signature_name: str, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Predict on ``signature_name`` (every output): output alias -> value."""
        name = signature_name or DEFAULT_SIGNATURE
        call = self.predict_call(name, tensors)
        values = self.run_session(call.fetches, call.feeds)
        outputs = self.signatures[name].output_tensors
        return {alias: values[outputs[alias]] for alias in call.aliases}

    # -- Session::Run ----------------------------------------------------------------------------

    def run_session(self, fetches: tuple[str, ...], feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``Session::Run(feeds, fetches)``: fetch name -> value; TensorFlow's errors as ServingError."""
        self._guard.check(feeds)
        key = (tuple(feeds), fetches)
        run = self._callables.get(key)
        if run is None:
            run = self._make_callable(key)
        try:
            values = run(*feeds.values())
        except self._tf.errors.OpError as exc:
            raise ServingError(CODE_NAMES.get(exc.error_code, "UNKNOWN"), exc.message) from None
        except (TypeError, ValueError) as exc:  # a value numpy cannot hand to TensorFlow
            raise invalid_argument(" ".join(str(exc).split())[:2000]) from None
        return dict(zip(fetches, values, strict=True))

    def _make_callable(self, key: tuple[tuple[str, ...], tuple[str, ...]]) -> Any:
        from tensorflow.core.protobuf import config_pb2  # lazy: TensorFlow is loaded by now

        with self._callables_lock:
            run = self._callables.get(key)
            if run is None:
                options = config_pb2.CallableOptions(feed=list(key[0]), fetch=list(key[1]))
                try:
                    # Session::MakeCallable: Python's Session.run checks fed shapes against the
                    # graph's static shapes, which tensorflow_model_server (C++) never does.
                    run = self._session._make_callable_from_options(options)
                except self._tf.errors.OpError as exc:
                    raise ServingError(CODE_NAMES.get(exc.error_code, "UNKNOWN"), exc.message) from None
                self._callables[key] = run
            return run

    def warm_up(self) -> None:
        """Prepare every signature's session callable and run each numeric signature once on
        zeros, so the first request pays no graph set-up.

        The callable is the one a request for all of a signature's outputs uses (predict, and
        classify/regress, which fetch the same tensors in the same order); a signature the zeros
        do not suit (a graph that rejects them) is only prepared.
        """
        for key, signature in self.signatures.items():
            feeds = tuple(signature.input_tensors[a] for a in sorted(signature.input_tensors))
            fetches = tuple(dict.fromkeys(signature.output_tensors[a] for a in sorted(signature.output_tensors)))
            if feeds and fetches and (feeds, fetches) not in self._callables:
                try:
                    self._make_callable((feeds, fetches))
                except ServingError:
                    continue
            tensors = {}
            for alias, spec in signature.inputs.items():
                if spec.dtype == "string" or not spec.shape or any(d is None for d in spec.shape[1:]):
                    break
                dims = tuple(1 if d is None else d for d in spec.shape)
                tensors[alias] = np.zeros(dims, dtype=self._tf.dtypes.as_dtype(spec.dtype).as_numpy_dtype)
            else:
                if tensors:
                    try:
                        self.run(key, tensors)
                    except ServingError:
                        continue

    def close(self) -> None:
        """Release the session (its variables and kernels)."""
        self._session.close()
