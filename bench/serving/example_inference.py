"""Classify, Regress and MultiInference on ``tf.Example``: which tensors to feed and fetch, and the results.

The protocol-free part of tensorflow/serving's ``classifier.cc``, ``regressor.cc`` and
``multi_inference.cc``: choosing and checking the signature (``GetClassificationSignatureDef``,
``PreProcessClassification`` ...), and turning the fetched tensors into results
(``PostProcessClassificationResult`` ...), with upstream's messages. The predict core runs the
session between the two; REST and gRPC front ends only convert requests and results::

    plan = classify_plan(loaded.signatures, "classify_x_to_y")
    values = loaded.run_session(plan.fetches, {plan.feed: examples.tensor()})
    classification_result(plan, len(examples.examples), values)   # ((Class(b"", 3.0),),)

``--enable_signature_method_name_check`` (off by default, as upstream) additionally requires the
signature's method name to match the API.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from bench.api_names import DEFAULT_SIGNATURE
from bench.serving.saved_model import CLASSIFY_METHOD, REGRESS_METHOD, Signature
from bench.serving.status import ServingError, invalid_argument

__all__ = [
    "Class",
    "ClassificationResult",
    "InferencePlan",
    "InferenceTask",
    "RegressionResult",
    "classification_result",
    "classify_plan",
    "multi_inference_plan",
    "multi_inference_results",
    "regress_plan",
    "regression_result",
]

CLASSIFY_INPUTS = "inputs"
CLASSIFY_OUTPUT_CLASSES = "classes"
CLASSIFY_OUTPUT_SCORES = "scores"
REGRESS_INPUTS = "inputs"
REGRESS_OUTPUTS = "outputs"


class Class(NamedTuple):
    """One ``tensorflow.serving.Class``: a label ("" without a classes output) and a score
    (0.0 without a scores output)."""

    label: bytes
    score: float


ClassificationResult = tuple[tuple[Class, ...], ...]  # per example, per class
RegressionResult = tuple[float, ...]  # per example


@dataclass(frozen=True)
class InferencePlan:
    """A classify or regress signature, resolved: the tensor to feed the examples to and the
    tensors to fetch (classes then scores, or the regression output)."""

    method: str  # CLASSIFY_METHOD or REGRESS_METHOD
    signature: Signature
    feed: str
    fetches: tuple[str, ...]


@dataclass(frozen=True)
class InferenceTask:
    """One task of a MultiInferenceRequest: model name, signature name ("" = default) and method name."""

    model_name: str
    signature_name: str
    method_name: str


def _find(signatures: Mapping[str, Signature], signature_name: str) -> Signature:
    name = signature_name or DEFAULT_SIGNATURE
    if name not in signatures:
        raise invalid_argument(f"No signature was found with the name: {name}")
    return signatures[name]


def _method_error(kind: str, expected: str, signature: Signature) -> ServingError:
    return invalid_argument(f"Expected {kind} signature method_name to be {expected}. Was: {signature.method_name}")


def _preprocess_classification(signature: Signature, method_name_check: bool) -> InferencePlan:
    """``PreProcessClassification``."""
    if method_name_check and signature.method_name != CLASSIFY_METHOD:
        raise _method_error("classification", CLASSIFY_METHOD, signature)
    if len(signature.input_tensors) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.output_tensors) not in (1, 2):
        raise invalid_argument(f"Expected one or two output Tensors, found {len(signature.output_tensors)}")
    if CLASSIFY_INPUTS not in signature.input_tensors:
        raise invalid_argument(f"No classification inputs found in SignatureDef: {signature.text}")
    fetches = tuple(
        signature.output_tensors[key]
        for key in (CLASSIFY_OUTPUT_CLASSES, CLASSIFY_OUTPUT_SCORES)
        if key in signature.output_tensors
    )
    if not fetches:
        raise invalid_argument(
            f'Expected classification signature outputs to contain at least one of "{CLASSIFY_OUTPUT_CLASSES}" or '
            f'"{CLASSIFY_OUTPUT_SCORES}". Signature was: {signature.text}'
        )
    return InferencePlan(CLASSIFY_METHOD, signature, signature.input_tensors[CLASSIFY_INPUTS], fetches)


def _preprocess_regression(signature: Signature, method_name_check: bool) -> InferencePlan:
    """``PreProcessRegression``."""
    if method_name_check and signature.method_name != REGRESS_METHOD:
        raise _method_error("regression", REGRESS_METHOD, signature)
    if len(signature.input_tensors) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.output_tensors) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if REGRESS_INPUTS not in signature.input_tensors:
        raise invalid_argument(f"No regression inputs found in SignatureDef: {signature.text}")
    if REGRESS_OUTPUTS not in signature.output_tensors:
        raise invalid_argument(f"No regression outputs found in SignatureDef: {signature.text}")
    return InferencePlan(
        REGRESS_METHOD, signature, signature.input_tensors[REGRESS_INPUTS], (signature.output_tensors[REGRESS_OUTPUTS],)
    )


def classify_plan(
    signatures: Mapping[str, Signature], signature_name: str, *, method_name_check: bool = False
) -> InferencePlan:
    """``GetClassificationSignatureDef`` + ``PreProcessClassification``."""
    return _preprocess_classification(_find(signatures, signature_name), method_name_check)


def regress_plan(
    signatures: Mapping[str, Signature], signature_name: str, *, method_name_check: bool = False
) -> InferencePlan:
    """``GetRegressionSignatureDef`` + ``PreProcessRegression``."""
    return _preprocess_regression(_find(signatures, signature_name), method_name_check)


# -- results ------------------------------------------------------------------------------------


def _shape(value: np.ndarray) -> str:
    return "[" + ",".join(str(d) for d in value.shape) + "]"


_DTYPE_NAMES = {
    "f": {2: "DT_HALF", 4: "DT_FLOAT", 8: "DT_DOUBLE"},
    "i": {1: "DT_INT8", 2: "DT_INT16", 4: "DT_INT32", 8: "DT_INT64"},
    "u": {1: "DT_UINT8", 2: "DT_UINT16", 4: "DT_UINT32", 8: "DT_UINT64"},
    "c": {8: "DT_COMPLEX64", 16: "DT_COMPLEX128"},
    "b": {1: "DT_BOOL"},
}


def _dtype_name(value: np.ndarray) -> str:
    """TensorFlow's ``DataType_Name`` of a fetched value's dtype."""
    if value.dtype.kind in "OS":
        return "DT_STRING"
    return _DTYPE_NAMES.get(value.dtype.kind, {}).get(value.dtype.itemsize, f"DT_{value.dtype.name.upper()}")


def _check_matrix(value: np.ndarray, what: str, dtype: str, num_examples: int) -> None:
    if value.ndim != 2:
        raise invalid_argument(f"Expected Tensor shape: [batch_size num_classes] but got {_shape(value)}")
    if _dtype_name(value) != dtype:
        raise invalid_argument(f"Expected {what} Tensor of {dtype}. Got: {_dtype_name(value)}")
    if value.shape[0] != num_examples:
        raise invalid_argument(f"Expected {what} output batch size of {num_examples}. Got: {value.shape[0]}")


def classification_result(
    plan: InferencePlan, num_examples: int, values: Mapping[str, np.ndarray]
) -> ClassificationResult:
    """``PostProcessClassificationResult``: classes ``[batch, n]`` strings and/or scores ``[batch, n]`` floats."""
    outputs = plan.signature.output_tensors
    classes = values.get(outputs[CLASSIFY_OUTPUT_CLASSES]) if CLASSIFY_OUTPUT_CLASSES in outputs else None
    scores = values.get(outputs[CLASSIFY_OUTPUT_SCORES]) if CLASSIFY_OUTPUT_SCORES in outputs else None
    if classes is not None:
        _check_matrix(classes, "classes", "DT_STRING", num_examples)
    if scores is not None:
        _check_matrix(scores, "scores", "DT_FLOAT", num_examples)
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(
            f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. {scores.shape[1]}"
        )
    present = classes if classes is not None else scores
    width = present.shape[1] if present is not None else 0
    labels = classes.tolist() if classes is not None else None
    points = scores.tolist() if scores is not None else None
    return tuple(
        tuple(
            Class(bytes(labels[i][c]) if labels is not None else b"", points[i][c] if points is not None else 0.0)
            for c in range(width)
        )
        for i in range(num_examples)
    )


def regression_result(plan: InferencePlan, num_examples: int, values: Mapping[str, np.ndarray]) -> RegressionResult:
    """``PostProcessRegressionResult``: one float per example, ``[batch]`` or ``[batch, 1]``."""
    name = plan.signature.output_tensors[REGRESS_OUTPUTS]
    value = values.get(name)
    if value is None:
        raise invalid_argument(f"Could not find output tensor '{name}'")
    if not (value.ndim == 1 or (value.ndim == 2 and value.shape[1] == 1)):
        raise invalid_argument(
            f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got {_shape(value)}"
        )
    if value.shape[0] != num_examples:
        raise invalid_argument(f"Input batch size did not match output batch size: {num_examples} vs. {value.shape[0]}")
    if _dtype_name(value) != "DT_FLOAT":
        raise invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: {_dtype_name(value)}")
    if value.size != num_examples:
        raise invalid_argument(f"Expected output batch size to be {num_examples}.  Got: {value.size}")
    return tuple(float(v) for v in value.reshape(-1).tolist())


# -- MultiInference ------------------------------------------------------------------------------


def multi_inference_plan(
    signatures: Mapping[str, Signature], tasks: Sequence[InferenceTask], *, method_name_check: bool = False
) -> tuple[tuple[InferencePlan, ...], tuple[str, ...], tuple[str, ...]]:
    """``TensorFlowMultiInferenceRunner::Infer``'s checks: one plan per task, and the union of
    their feeds and (sorted) fetches, run once for all tasks."""
    model_name = ""
    seen: set[str] = set()
    plans: list[InferencePlan] = []
    for task in tasks:
        if not task.model_name:
            raise invalid_argument("Found ModelSpec with an empty model name.")
        if not model_name:
            model_name = task.model_name
        elif task.model_name != model_name:
            raise invalid_argument("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
        name = task.signature_name or DEFAULT_SIGNATURE
        if name in seen:
            raise invalid_argument(f"Duplicate evaluation of signature: {name}")
        seen.add(name)
        if name not in signatures:
            raise invalid_argument(f"Requested signature not found in model graph: {name}")
        if task.method_name == CLASSIFY_METHOD:
            plans.append(_preprocess_classification(signatures[name], method_name_check))
        elif task.method_name == REGRESS_METHOD:
            plans.append(_preprocess_regression(signatures[name], method_name_check))
        else:
            raise ServingError("UNIMPLEMENTED", f"Unsupported signature method_name: {task.method_name}")
    feeds = tuple(sorted({plan.feed for plan in plans}))
    fetches = tuple(sorted({name for plan in plans for name in plan.fetches}))
    return tuple(plans), feeds, fetches


def multi_inference_results(
    plans: Sequence[InferencePlan], num_examples: int, values: Mapping[str, np.ndarray]
) -> tuple[ClassificationResult | RegressionResult, ...]:
    """One classification or regression result per task, in task order."""
    return tuple(
        classification_result(plan, num_examples, values)
        if plan.method == CLASSIFY_METHOD
        else regression_result(plan, num_examples, values)
        for plan in plans
    )
