"""A decoded predict request, and how a decoder finds the inputs of the signature it names.

Both JSON decoders (``bench.serving.fast_decode`` and ``bench.serving.json_tensor``) return a
:class:`DecodedPredict`; the predict core runs it. ``inputs`` given to a decoder is one
signature's input map, a map of signature name -> input map, or a callable
``resolve(signature_name)`` (the server's model/version/signature lookup, which may raise
``ServingError``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from bench.api_names import DEFAULT_SIGNATURE
from bench.payloads.specs import InputSpec
from bench.serving.status import invalid_argument

Signatures = Mapping[str, Mapping[str, InputSpec]]
Resolver = Callable[[str], Mapping[str, InputSpec]]
Inputs = Signatures | Mapping[str, InputSpec] | Resolver


@dataclass
class DecodedPredict:
    """A decoded predict request: input tensors, request format and signature name
    (``""`` when the body names none, meaning ``serving_default``)."""

    tensors: dict[str, np.ndarray]
    row_format: bool
    signature_name: str = ""


def resolve_inputs(inputs: Inputs, signature_name: str) -> Mapping[str, InputSpec]:
    """The input map for ``signature_name`` from a resolver, a signatures map or one input map."""
    if callable(inputs):
        return inputs(signature_name)
    values = list(inputs.values())
    if values and isinstance(values[0], InputSpec):
        return inputs  # type: ignore[return-value]
    name = signature_name or DEFAULT_SIGNATURE
    if name not in inputs:
        raise invalid_argument(f'Serving signature name: "{name}" not found in signature def')
    return inputs[name]  # type: ignore[return-value]
