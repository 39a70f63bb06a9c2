"""A flat view of a Keras Functional graph, and a way to rebuild it.

Keras keeps a Functional model as nodes grouped by depth, and a nested
Functional or Sequential model as one opaque node. Quantization needs the
graph that TFLite will see: every layer call in order, nested models inlined,
and for each tensor its producer and its consumers. `trace` builds that view;
`Graph.replay` calls the same layers again on new tensors, letting the caller
wrap any tensor on the way. `observe()` and the export path are both replays.

Example:

>>> import keras
>>> inputs = keras.Input((4,))
>>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
>>> model = keras.Model(inputs, keras.layers.Dense(2, name="head")(hidden))
>>> [op.path for op in trace(model).ops]
['hidden', 'head']
"""

import dataclasses
import functools
import weakref
from typing import Any

import keras

from keras_quant._compat import keras_internals
from keras_quant._compat.keras_internals import Functional
from keras_quant.errors import UnsupportedModelError

# A tensor of the flat graph: the scope of the model call it lives in, and
# the id of its KerasTensor in that model.
TensorKey = tuple


@dataclasses.dataclass(frozen=True, eq=False)
class Op:
    """One layer call of the flattened graph.

    Attributes:
        layer: the layer (or Keras operation) that is called.
        path: readable unique name, nested models joined by `/`.
        node: the Keras node, whose arguments give the call signature.
        scope: key prefix of the model call this op belongs to.
        inputs: keys of the tensors the call reads.
        outputs: keys of the tensors it produces.
    """

    layer: Any
    path: str
    node: Any
    scope: tuple
    inputs: tuple
    outputs: tuple


@dataclasses.dataclass(frozen=True, eq=False)
class Graph:
    """The flattened graph of a model; see `trace`."""

    inputs: tuple
    outputs: tuple
    ops: tuple
    tensors: dict
    input_names: tuple
    _aliases: dict
    _structures: tuple = ((), ())

    def producer(self, key):
        """The op that produces `key`, or None for a model input."""
        return self._producers.get(key)

    def consumers(self, key):
        """The ops that read `key`, in graph order."""
        return list(self._consumers.get(key, ()))

    @functools.cached_property
    def _producers(self):
        return {key: op for op in self.ops for key in op.outputs}

    @functools.cached_property
    def _consumers(self):
        readers = {}
        for op in self.ops:
            for key in dict.fromkeys(op.inputs):
                readers.setdefault(key, []).append(op)
        return readers

    def replay(self, inputs, call_op=None, on_tensor=None):
        """Call every op again on `inputs` and return the new outputs.

        Args:
            inputs: one tensor per model input, in model order.
            call_op: `call_op(op, args, kwargs)` computes an op's outputs.
                Defaults to calling `op.layer(*args, **kwargs)`.
            on_tensor: `on_tensor(key, value)` may return a replacement for
                every tensor as it is produced, model inputs included.

        Returns:
            The list of output tensors, in model order.
        """
        call_op = call_op or _call_layer
        on_tensor = on_tensor or (lambda key, value: value)
        values = {}
        for key, value in zip(self.inputs, inputs):
            values[key] = on_tensor(key, value)
        for op in self.ops:
            local = {
                id(tensor): values[self._resolve(op.scope, tensor)]
                for tensor in op.node.input_tensors
            }
            args, kwargs = op.node.arguments.fill_in(local)
            results = keras.tree.flatten(call_op(op, args, kwargs))
            for key, value in zip(op.outputs, results):
                values[key] = on_tensor(key, value)
        return [values[key] for key in self.outputs]

    def rebuild(self, call_op=None, on_tensor=None, model_class=None, **kwargs):
        """A new model calling the same layers on new `keras.Input`s.

        Args:
            call_op: see `replay`.
            on_tensor: see `replay`.
            model_class: the class to build. Defaults to `keras.Model`.
            **kwargs: passed to the class (`name`, ...).

        Returns:
            The model, with the traced model's input and output structure.
        """
        inputs = [
            keras.Input(
                batch_shape=self.tensors[key].shape,
                dtype=self.tensors[key].dtype,
                name=name,
            )
            for key, name in zip(self.inputs, self.input_names)
        ]
        outputs = self.replay(inputs, call_op, on_tensor)
        inputs_struct, outputs_struct = self._structures
        return (model_class or keras.Model)(
            inputs=keras.tree.pack_sequence_as(inputs_struct, inputs),
            outputs=keras.tree.pack_sequence_as(outputs_struct, outputs),
            **kwargs,
        )

    def _resolve(self, scope, tensor):
        return _resolve(self._aliases, (scope, id(tensor)))


def _call_layer(op, args, kwargs):
    return op.layer(*args, **kwargs)


def _resolve(aliases, key):
    while key in aliases:
        key = aliases[key]
    return key


def as_functional(model):
    """Returns the Functional graph behind `model`, or raises.

    Raises:
        UnsupportedModelError: for a non-Keras object, a subclassed model or
            a Sequential model that was never given an input shape.
    """
    if isinstance(model, Functional):
        return model
    if isinstance(model, keras.Sequential):
        if keras_internals.functional_of(model) is None:
            raise UnsupportedModelError(
                f"Sequential model '{model.name}' has no input shape yet, so "
                "it has no graph to quantize. Start it with "
                "`keras.Input(shape=...)` or call `model.build(input_shape)`."
            )
        return keras_internals.functional_of(model)
    if isinstance(model, keras.Model):
        raise UnsupportedModelError(
            f"Expected a Functional or Sequential Keras model. Received: a "
            f"subclassed model of type {type(model).__name__}, whose graph "
            "lives in Python code that keras-quant cannot rewrite. Rebuild "
            "it with the Functional API (`keras.Model(inputs, outputs)`), "
            "keeping your custom layers as layers."
        )
    raise UnsupportedModelError(
        f"Expected a Keras 3 model (`keras.Model`). Received: an object of "
        f"type {type(model).__module__}.{type(model).__name__}. A tf_keras "
        "(Keras 2) model is not a Keras 3 model."
    )


# model -> (its layers when traced, its Graph): a model is traced once,
# however many stages of one export look at it.
_TRACED = weakref.WeakKeyDictionary()


def trace(model):
    """Flattens `model` into a `Graph`, inlining nested models.

    The graph is kept with the model and traced again only if the model's
    own layers changed (a Sequential model's `add` or `pop`).

    Args:
        model: a Functional or Sequential Keras 3 model.

    Returns:
        The `Graph` of every layer call in topological order.
    """
    if not isinstance(model, keras.Model):
        return _trace(model)  # raises, saying what is accepted
    layers = tuple(map(id, model.layers))
    cached = _TRACED.get(model)
    if cached is not None and cached[0] == layers:
        return cached[1]
    graph = _trace(model)
    _TRACED[model] = (layers, graph)
    return graph


def _trace(model):
    functional = as_functional(model)
    builder = _Builder()
    builder.walk(functional, scope=(), prefix="")
    return Graph(
        inputs=tuple(((), id(x)) for x in functional.inputs),
        outputs=tuple(
            _resolve(builder.aliases, ((), id(x))) for x in functional.outputs
        ),
        ops=tuple(builder.ops),
        tensors=builder.tensors,
        input_names=tuple(_input_name(x) for x in functional.inputs),
        _aliases=builder.aliases,
        _structures=keras_internals.io_structures(functional),
    )


def _input_name(tensor):
    return keras_internals.producer_name(tensor)


class _Builder:
    def __init__(self):
        self.ops = []
        self.aliases = {}
        self.tensors = {}
        self._calls = {}

    def walk(self, functional, scope, prefix):
        for tensor in functional.inputs:
            self.tensors.setdefault((scope, id(tensor)), tensor)
        nodes = keras_internals.nodes_by_depth(functional)
        for depth in sorted(nodes, reverse=True):
            for node in nodes[depth]:
                if node.operation is None or node.is_input:
                    continue
                self._add(node, scope, prefix)

    def _add(self, node, scope, prefix):
        layer = node.operation
        path = self._unique_path(prefix + layer.name)
        if isinstance(layer, (Functional, keras.Sequential)):
            self._inline(layer, node, scope, path)
            return
        inputs = tuple(
            _resolve(self.aliases, (scope, id(t))) for t in node.input_tensors
        )
        outputs = tuple((scope, id(t)) for t in node.outputs)
        for key, tensor in zip(outputs, node.outputs):
            self.tensors[key] = tensor
        self.ops.append(Op(layer, path, node, scope, inputs, outputs))

    def _inline(self, model, node, scope, path):
        inner = as_functional(model)
        inner_scope = scope + (path,)
        for inner_input, outer in zip(inner.inputs, node.input_tensors):
            self.aliases[(inner_scope, id(inner_input))] = _resolve(
                self.aliases, (scope, id(outer))
            )
        self.walk(inner, inner_scope, path + "/")
        for outer, inner_output in zip(node.outputs, inner.outputs):
            self.aliases[(scope, id(outer))] = _resolve(
                self.aliases, (inner_scope, id(inner_output))
            )

    def _unique_path(self, path):
        count = self._calls.get(path, 0)
        self._calls[path] = count + 1
        return path if count == 0 else f"{path}@{count}"
