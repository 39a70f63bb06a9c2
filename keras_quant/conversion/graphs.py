"""The Keras graphs conversion starts from, rebuilt from an observed model.

`fake_quant_graph` is the graph TFLite will compute, with a fake-quant op
holding each collected range; `float_graph` is the float model with the
observers dropped. Both call the user's layers (the QAT wrappers' float
layers), so the converter sees the same weights.
"""

import keras

from keras_quant.conversion import scopes
from keras_quant.graph import decomposition
from keras_quant.graph import trace as graph_lib
from keras_quant.observation.layers import FakeQuant
from keras_quant.observation.layers import NameScope
from keras_quant.observation.layers import Split
from keras_quant.observation.observers import Observer
from keras_quant.observation.qat import QuantizeWeights
from keras_quant.observation.recording import find_observers


def fake_quant_graph(model, bits=8, record=None):
    """The graph TFLite will compute: split layers as their steps, and a
    fake-quant with its collected range in place of each observer.

    With `bits=16` the ranges are made symmetric, as int16 activations are:
    a simulation of the 16x8 model in Keras. With `bits=None` nothing is
    quantized: the float graph, step by step.

    Args:
        model: an observed model.
        bits: see above.
        record: a dict that, if given, receives `{point: tensor}` for every
            quantization point, in graph order (see `sensitivity`).
    """

    def fake_quant(observer, value):
        low, high = observer.range()
        if bits == 16:
            bound = max(-low, high)
            value = FakeQuant(-bound, bound, 16, narrow_range=True)(value)
        elif bits == 8:
            value = FakeQuant(low, high)(value)
        if record is not None:
            record[observer.point] = value
        return value

    def call_op(op, args, kwargs):
        if isinstance(op.layer, Observer):
            return fake_quant(op.layer, args[0])
        if isinstance(op.layer, Split):
            value = args[0]
            for step, part in decomposition.plan(
                op.layer.layer, op.layer.parts
            ):
                value = decomposition.LayerStep(op.layer.layer, step)(value)
                if part is not None:
                    value = fake_quant(op.layer.observer_for(part), value)
            return value
        return float_layer(op.layer)(*args, **kwargs)

    return _rebuild(model, call_op)


def float_graph(model):
    """The float graph: observers dropped."""
    if not find_observers(model):
        return model

    def call_op(op, args, kwargs):
        if isinstance(op.layer, Observer):
            return args[0]
        layer = float_layer(unsplit(op.layer))
        if isinstance(op.layer, Split):
            return layer(*args)
        return layer(*args, **kwargs)

    return _rebuild(model, call_op)


def scoped_float_graph(model):
    """The float graph with every layer call in a numbered name scope.

    Recurrent layers over a fixed number of steps are unrolled
    (`unrolled`), so that no WHILE loop stays float.

    TFLite names each tensor after the TensorFlow ops fused into it, the
    last one first, so the first `;`-part of a tensor's name holds the
    scope of the op computing it: an exact map from TFLite tensors back to
    the traced graph's ops, whatever the model and layer names.

    Returns:
        `(keras model, ops)`: `ops[i]` is the traced op called in scope
        `scopes.name(i)`.
    """
    ops = []

    def call_op(op, args, kwargs):
        if isinstance(op.layer, Observer):
            return args[0]
        layer = unrolled(float_layer(unsplit(op.layer)), args)
        if isinstance(layer, keras.layers.Layer):
            # Keras operations that are not layers (`x + 3.0` in a
            # functional graph) take constants as positional arguments,
            # which a layer call refuses: they run unscoped, and their
            # tensors take replayed ranges.
            layer = NameScope(layer, scopes.name(len(ops)))
            ops.append(op)
        if isinstance(op.layer, Split):
            return layer(*args)
        return layer(*args, **kwargs)

    return _rebuild(model, call_op), ops


# Recurrent layers over at most this many time steps are unrolled for the
# engine; longer or variable-length ones keep their WHILE loop (float).
MAX_UNROLLED_STEPS = 128


def unrolled(layer, args):
    """An unrolled copy of a recurrent layer, with its weights, when its
    input's time steps are fixed and at most `MAX_UNROLLED_STEPS`; else
    `layer` itself.

    TensorFlow converts a rolled layer to a WHILE loop, which the
    quantizer leaves float; unrolled, each step is FULLY_CONNECTED, SPLIT,
    LOGISTIC, TANH and MUL ops that LiteRT runs in int8 and int16, with the
    weights stored once (decision D33).

    >>> lstm = keras.layers.LSTM(4)
    >>> sequence = keras.Input((6, 3))
    >>> _ = lstm(sequence)
    >>> unrolled(lstm, [sequence]).unroll
    True
    """
    if not _rolled_recurrent(layer):
        return layer
    steps = args[0].shape[1] if args else None
    if layer.stateful or steps is None or steps > MAX_UNROLLED_STEPS:
        return layer
    copy = type(layer).from_config({**layer.get_config(), "unroll": True})
    copy.build(args[0].shape)
    copy.set_weights(layer.get_weights())
    return copy


def unrolls_any(model):
    """Whether `scoped_float_graph` may unroll a layer of `model`: only
    then does it differ from `float_graph` in more than its names.

    >>> inputs = keras.Input((6, 3))
    >>> unrolls_any(keras.Model(inputs, keras.layers.GRU(2)(inputs)))
    True
    >>> unrolls_any(keras.Model(inputs, keras.layers.Dense(2)(inputs)))
    False
    """
    return any(
        _rolled_recurrent(float_layer(unsplit(op.layer)))
        for op in graph_lib.trace(model).ops
    )


def _rolled_recurrent(layer):
    return isinstance(layer, keras.layers.RNN) and not layer.unroll


def layer_name(layer):
    """The name of the user's layer behind an op (unwrapping keras-quant's
    `Split` and QAT wrappers)."""
    return float_layer(unsplit(layer)).name


def unsplit(layer):
    return layer.layer if isinstance(layer, Split) else layer


def float_layer(layer):
    """The layer itself, or the float layer a QAT wrapper fake-quantizes:
    the converter quantizes its weights as `QuantizeWeights` simulates."""
    return layer.layer if isinstance(layer, QuantizeWeights) else layer


def _rebuild(model, call_op):
    return graph_lib.trace(model).rebuild(call_op, name=model.name)
