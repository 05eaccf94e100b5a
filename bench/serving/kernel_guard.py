"""The one kind of input that aborts the whole process instead of failing its request, found and refused.

TensorFlow's x86 builds run convolutions with oneDNN kernels (``_MklNativeConv2D`` and the fused
and depthwise forms). Those read the channel dimension of their input before any rank check, so
a data input of rank < 4 fails a CHECK (``tensor_format.h: Check failed: index >= 0 && index <
num_total_dims``) and aborts the process: on the reference model, ``{"instances": [...]}`` with
rank-2 images (a rank-3 batch) killed the server. TensorFlow's own kernels answer the same input
with INVALID_ARGUMENT, and measured on TensorFlow 2.21, every other rank (5 included) and every
other op we tried (pooling, batch norm, matmul, LRN, transpose, concat) fails or succeeds
without aborting. So this is the only condition refused before a run, with the message the
stock kernel gives (``convolution input must be 4-dimensional: [2,128,3]``).

Whether a fed tensor reaches a convolution at the same rank is read from the MetaGraph once, at
load: a walk from each signature input through ops that keep the rank (``Cast``, element-wise
arithmetic, activations) into ``PartitionedCall``/``StatefulPartitionedCall`` function bodies
and back out of their returns, up to the data operand of a convolution. An element-wise
operand of unknown rank, or any other op (reshape, map_fn, ...), ends the walk without a guard,
so nothing that could succeed is refused::

    guard = ConvolutionRankGuard(meta_graph)
    guard.check({"serving_default_examples:0": batch})   # ServingError for a rank-3 batch
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.serving.status import ServingError

__all__ = ["ConvolutionRankGuard"]

MIN_RANK = 4  # oneDNN's convolutions read dims 0-3 unchecked (NHWC or NCHW; Conv3D too)

# Convolutions whose oneDNN kernel aborts on a low-rank data input (operand 0), and the
# message TensorFlow's own kernel gives for it ({shape} = the input's shape, e.g. [2,128,3]).
_CONVOLUTIONS = {
    "Conv2D": "convolution input must be 4-dimensional: {shape}",
    "_FusedConv2D": "convolution input must be 4-dimensional: {shape}",
    "DepthwiseConv2dNative": "input must be 4-dimensional{shape}",
    "_FusedDepthwiseConv2dNative": "input must be 4-dimensional{shape}",
    "Conv3D": "input must be 5-dimensional",
}
# Output 0 has the shape of input 0.
_SAME_SHAPE = frozenset(
    "Identity Snapshot StopGradient PreventGradient CheckNumerics Cast Neg Abs Sign Round Rint Floor Ceil "
    "Relu Relu6 Elu Selu LeakyRelu Softplus Softsign Sigmoid Tanh Exp Expm1 Log Log1p Sqrt Rsqrt Square "
    "Reciprocal Inv Erf".split()
)
# Output rank is the larger of the two operands' ranks (NumPy broadcasting).
_BROADCAST = frozenset(
    "Add AddV2 Sub Mul MulNoNan RealDiv Div DivNoNan FloorDiv FloorMod Maximum Minimum Pow SquaredDifference".split()
)
_CALLS = frozenset(("PartitionedCall", "StatefulPartitionedCall"))

Shape = tuple[int | None, ...]
# Where a tensor comes from in one graph or function body: ("node", name, output index) or ("arg", name, -1).
_Source = tuple[str, str, int]


@dataclass(frozen=True)
class _Requirement:
    """A fed tensor reaches ``op``'s data input with its rank, broadcast against ``others``."""

    op: str
    others: tuple[Shape, ...]


class _Body:
    """One graph or function body: nodes, who consumes each tensor, and (functions) what it returns."""

    def __init__(self, nodes: Any, inputs: Any = (), arg_attrs: Any = None, rets: Mapping[str, str] | None = None):
        self.nodes = {node.name: node for node in nodes}
        self.args = [arg.name for arg in inputs]
        self.arg_attrs = arg_attrs
        self.consumers: dict[_Source, list[tuple[str, int]]] = {}
        for node in nodes:
            for position, text in enumerate(i for i in node.input if not i.startswith("^")):
                self.consumers.setdefault(self.source(text), []).append((node.name, position))
        self.returns: dict[_Source, list[int]] = {}
        for index, text in enumerate((rets or {}).values()):
            self.returns.setdefault(self.source(text), []).append(index)

    def source(self, text: str) -> _Source:
        """``x`` (an argument), ``node:1`` (GraphDef) or ``node:out_arg:1`` (FunctionDef) as a source."""
        parts = text.split(":")
        if len(parts) == 1:
            return ("arg", text, -1) if text in self.args else ("node", text, 0)
        if len(parts) == 2:
            return ("node", parts[0], int(parts[1]))
        return ("node", parts[0], _flat_output_index(self.nodes.get(parts[0]), parts[1], int(parts[2])))


def _flat_output_index(node: Any, out_arg: str, index: int) -> int:
    """FunctionDef's ``node:out_arg:i`` as the node's flat output index (list outputs expanded)."""
    from tensorflow.python.framework import op_def_registry  # lazy: only where a model is loaded

    op_def = op_def_registry.get(node.op) if node is not None else None
    if op_def is None:
        return index
    offset = 0
    for arg in op_def.output_arg:
        if arg.name == out_arg:
            return offset + index
        if arg.number_attr:
            offset += node.attr[arg.number_attr].i
        elif arg.type_list_attr:
            offset += len(node.attr[arg.type_list_attr].list.type)
        else:
            offset += 1
    return index


def _proto_shape(proto: Any) -> Shape | None:
    if proto.unknown_rank:
        return None
    return tuple(None if d.size < 0 else d.size for d in proto.dim)


class ConvolutionRankGuard:
    """Refuses the feeds that would reach a oneDNN convolution below rank 4 (see the module doc)."""

    def __init__(self, meta_graph: Any) -> None:
        library = {f.signature.name: f for f in meta_graph.graph_def.library.function}
        self._bodies: dict[str, _Body] = {"": _Body(meta_graph.graph_def.node)}
        for name, fdef in library.items():
            self._bodies[name] = _Body(fdef.node_def, fdef.signature.input_arg, fdef.arg_attr, fdef.ret)
        self._requirements: dict[str, tuple[_Requirement, ...]] = {}
        for signature in meta_graph.signature_def.values():
            for info in signature.inputs.values():
                if info.name and info.name not in self._requirements:
                    found = tuple(dict.fromkeys(self._walk(info.name)))
                    if found:
                        self._requirements[info.name] = found

    @property
    def guarded(self) -> dict[str, tuple[str, ...]]:
        """Fed tensor name -> the convolutions it reaches at its own rank (for logs and tests)."""
        return {name: tuple(r.op for r in reqs) for name, reqs in self._requirements.items()}

    def check(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Raise INVALID_ARGUMENT, as TensorFlow's own kernel would, for a feed that would abort."""
        for name, value in feeds.items():
            for requirement in self._requirements.get(name, ()):
                shape = _broadcast(tuple(value.shape), requirement.others)
                if shape is not None and len(shape) < MIN_RANK:
                    text = "[" + ",".join(str(d) for d in shape) + "]"
                    raise ServingError("INVALID_ARGUMENT", _CONVOLUTIONS[requirement.op].format(shape=text))

    # -- the walk ---------------------------------------------------------------------------------

    def _walk(self, tensor_name: str) -> Iterator[_Requirement]:
        node, _, port = tensor_name.partition(":")
        start: _Source = ("node", node, int(port or 0))
        # (body, call stack of (caller body, call node), source, shapes broadcast in so far)
        pending: list[tuple[str, tuple[tuple[str, str], ...], _Source, tuple[Shape, ...]]] = [("", (), start, ())]
        seen: set[tuple[str, tuple[tuple[str, str], ...], _Source]] = set()
        while pending:
            scope, stack, source, others = pending.pop()
            if (scope, stack, source) in seen or len(seen) > 100_000:
                continue
            seen.add((scope, stack, source))
            body = self._bodies[scope]
            for output in body.returns.get(source, ()):  # back out to the caller's call node output
                if stack:
                    caller, call = stack[-1]
                    pending.append((caller, stack[:-1], ("node", call, output), others))
            for consumer, position in body.consumers.get(source, ()):
                node = body.nodes[consumer]
                op = node.op
                if op in _CONVOLUTIONS:
                    if position == 0 and all(len(s) < MIN_RANK for s in others):
                        yield _Requirement(op, others)
                elif op in _SAME_SHAPE and position == 0:
                    pending.append((scope, stack, ("node", consumer, 0), others))
                elif op == "IdentityN":
                    pending.append((scope, stack, ("node", consumer, position), others))
                elif op == "BiasAdd" and position == 0:
                    pending.append((scope, stack, ("node", consumer, 0), others))
                elif op in _BROADCAST and position in (0, 1):
                    inputs = [i for i in node.input if not i.startswith("^")]
                    other = self._static_shape(scope, body.source(inputs[1 - position]))
                    if other is not None:
                        pending.append((scope, stack, ("node", consumer, 0), (*others, other)))
                else:
                    function = self._called_function(node)
                    if function is not None and position < len(self._bodies[function].args):
                        arg = ("arg", self._bodies[function].args[position], -1)
                        pending.append((function, (*stack, (scope, consumer)), arg, others))

    def _called_function(self, node: Any) -> str | None:
        if node.op in _CALLS:
            name = node.attr["f"].func.name
            return name if name in self._bodies else None
        return node.op if node.op and node.op in self._bodies else None

    def _static_shape(self, scope: str, source: _Source, depth: int = 0) -> Shape | None:
        """The static shape of an element-wise operand where the graph states it, else None."""
        body = self._bodies[scope]
        if source[0] == "arg":
            attrs = body.arg_attrs
            index = body.args.index(source[1])
            if attrs is not None and index in attrs and "_output_shapes" in attrs[index].attr:
                shapes = attrs[index].attr["_output_shapes"].list.shape
                return _proto_shape(shapes[0]) if shapes else None
            return None
        node = body.nodes.get(source[1])
        if node is None or depth > 8:
            return None
        index = source[2]
        if node.op == "Const":
            return _proto_shape(node.attr["value"].tensor.tensor_shape)
        if "_output_shapes" in node.attr and index < len(node.attr["_output_shapes"].list.shape):
            return _proto_shape(node.attr["_output_shapes"].list.shape[index])
        if node.op in ("Placeholder", "VariableV2", "VarHandleOp") and "shape" in node.attr:
            return _proto_shape(node.attr["shape"].shape)
        if node.op in _SAME_SHAPE or node.op == "ReadVariableOp":
            inputs = [i for i in node.input if not i.startswith("^")]
            return self._static_shape(scope, body.source(inputs[0]), depth + 1) if inputs else None
        return None


def _broadcast(shape: Shape, others: tuple[Shape, ...]) -> Shape | None:
    """``shape`` broadcast against ``others`` (unknown dims take the other side), or None when
    two known dims clash (TensorFlow then fails the element-wise op before any convolution)."""
    result: list[int | None] = list(shape)
    for other in others:
        width = max(len(result), len(other))
        ones: list[int | None] = [1] * width
        left = ones[: width - len(result)] + result
        right = ones[: width - len(other)] + list(other)
        merged: list[int | None] = []
        for a, b in zip(left, right, strict=True):
            if a is None or b is None:
                merged.append(a if b is None or b == 1 else b)
            elif a == b or b == 1:
                merged.append(a)
            elif a == 1:
                merged.append(b)
            else:
                return None
        result = merged
    return tuple(result)
