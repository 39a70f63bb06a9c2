"""Where TFLite quantizes: the quantization points of a Keras graph.

TFLite does not quantize every Keras tensor. The converter fuses a
Conv/Dense layer with a following BatchNormalization (folded into the
weights) and a following ReLU/ReLU6 (a fused activation), so only the output
of such a fused group is a quantized tensor; observing the tensor between
Conv2D and BatchNormalization would describe a tensor that does not exist in
the `.tflite` file (and a fake-quant there stops the fold). Reshape-like ops
and max pooling reuse their input's quantization. Everything else needs a
range of its own, and sigmoid, softmax and tanh have the fixed output ranges
of the TFLite quantization spec.

The rules are data: `ROLES` maps a layer type to its role, `ACTIVATIONS`
maps an activation name to its role, and `find_points` applies them. The
same points serve observers (calibration) and fake-quant (export and
quantization-aware training).

Example:

>>> import keras
>>> x = keras.Input((8, 8, 1), name="image")
>>> y = keras.layers.Conv2D(4, 3, use_bias=False)(x)
>>> y = keras.layers.BatchNormalization()(y)
>>> y = keras.layers.ReLU(name="relu")(y)
>>> y = keras.layers.Flatten()(y)
>>> y = keras.layers.Dense(10, activation="softmax", name="head")(y)
>>> [p.name for p in find_points(keras.Model(x, y))]
['image', 'relu', 'head/pre_activation', 'head']
"""

import dataclasses
import enum

import keras
import numpy as np
from keras import layers

from keras_quant.graph import trace as graph_lib


class Role(str, enum.Enum):
    """What a layer does to quantization, as the TFLite converter sees it."""

    COMPUTE = "compute"  # Conv/Dense: starts a fused group.
    FOLD = "fold"  # BatchNormalization: folds into a preceding COMPUTE.
    ELEMENTWISE = "elementwise"  # Add/Sub/Mul: fuses a following ReLU.
    FUSED_ACTIVATION = "fused_activation"  # ReLU/ReLU6/linear.
    FIXED_RANGE = "fixed_range"  # sigmoid/softmax/tanh outputs.
    SAME_SCALE = "same_scale"  # shares its input's quantization.
    OWN_RANGE = "own_range"  # anything else: its output gets a range.


# The fixed output ranges of the TFLite int8 spec: sigmoid and softmax
# outputs have scale 1/256 and zero point -128, tanh scale 1/128 and 0.
SIGMOID_RANGE = (0.0, 255.0 / 256.0)
TANH_RANGE = (-1.0, 127.0 / 128.0)

ACTIVATIONS = {
    "linear": (Role.FUSED_ACTIVATION, None),
    "relu": (Role.FUSED_ACTIVATION, None),
    "relu6": (Role.FUSED_ACTIVATION, None),
    "sigmoid": (Role.FIXED_RANGE, SIGMOID_RANGE),
    "softmax": (Role.FIXED_RANGE, SIGMOID_RANGE),
    "tanh": (Role.FIXED_RANGE, TANH_RANGE),
}

ROLES = {
    layers.Conv1D: Role.COMPUTE,
    layers.Conv2D: Role.COMPUTE,
    layers.DepthwiseConv1D: Role.COMPUTE,
    layers.DepthwiseConv2D: Role.COMPUTE,
    layers.SeparableConv1D: Role.COMPUTE,
    layers.SeparableConv2D: Role.COMPUTE,
    layers.Dense: Role.COMPUTE,
    layers.BatchNormalization: Role.FOLD,
    layers.Add: Role.ELEMENTWISE,
    layers.Subtract: Role.ELEMENTWISE,
    layers.Multiply: Role.ELEMENTWISE,
    layers.Reshape: Role.SAME_SCALE,
    layers.Flatten: Role.SAME_SCALE,
    layers.MaxPooling1D: Role.SAME_SCALE,
    layers.MaxPooling2D: Role.SAME_SCALE,
    layers.GlobalMaxPooling1D: Role.SAME_SCALE,
    layers.GlobalMaxPooling2D: Role.SAME_SCALE,
    layers.Dropout: Role.SAME_SCALE,
    layers.SpatialDropout1D: Role.SAME_SCALE,
    layers.SpatialDropout2D: Role.SAME_SCALE,
    layers.GaussianNoise: Role.SAME_SCALE,
    layers.GaussianDropout: Role.SAME_SCALE,
    layers.ZeroPadding1D: Role.SAME_SCALE,
    layers.ZeroPadding2D: Role.SAME_SCALE,
    layers.Cropping1D: Role.SAME_SCALE,
    layers.Cropping2D: Role.SAME_SCALE,
    layers.Permute: Role.SAME_SCALE,
    layers.Identity: Role.SAME_SCALE,
    layers.Softmax: Role.FIXED_RANGE,
}

SEPARABLE = (layers.SeparableConv1D, layers.SeparableConv2D)
TRANSPOSED = (layers.Conv1DTranspose, layers.Conv2DTranspose)

# Roles whose output can absorb a following fused activation.
_GROUP_HEADS = (Role.COMPUTE, Role.ELEMENTWISE)


@dataclasses.dataclass(frozen=True)
class QuantPoint:
    """A tensor that TFLite quantizes.

    Attributes:
        name: readable unique name: the input name, the layer path, or
            `"<layer path>/pre_activation"` for the tensor inside a Conv or
            Dense layer whose activation TFLite cannot fuse.
        key: the tensor's key in the traced graph.
        fixed_range: `(min, max)` set by the spec (sigmoid, softmax, tanh),
            or None when the range must be observed.
        part: for a tensor inside a layer that TFLite splits in two ops,
            its name (see `keras_quant.decomposition`); else None.
    """

    name: str
    key: tuple
    fixed_range: tuple = None
    part: str = None


def activation_name(layer):
    """The name of a layer's `activation` (None when it has none)."""
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    return getattr(activation, "__name__", type(activation).__name__)


def role_of(layer):
    """The `Role` of a layer, with its fixed range if it has one.

    Returns:
        `(role, fixed_range)`; unknown layers get `Role.OWN_RANGE`.
    """
    if isinstance(layer, layers.ReLU):
        return (_relu_layer_role(layer), None)
    if isinstance(layer, layers.Activation):
        return ACTIVATIONS.get(activation_name(layer), (Role.OWN_RANGE, None))
    for layer_type in type(layer).__mro__:
        if layer_type in ROLES:
            role = ROLES[layer_type]
            return (role, SIGMOID_RANGE if role is Role.FIXED_RANGE else None)
    return (Role.OWN_RANGE, None)


def _relu_layer_role(layer):
    plain = float(layer.negative_slope) == 0 and float(layer.threshold) == 0
    capped = layer.max_value is None or float(layer.max_value) == 6.0
    return Role.FUSED_ACTIVATION if plain and capped else Role.OWN_RANGE


def splits_activation(layer):
    """True for a layer whose `activation=` TFLite computes as its own op.

    Such a layer becomes two TFLite ops (say FULLY_CONNECTED then SOFTMAX),
    so the tensor between them needs a range of its own. TRANSPOSE_CONV
    fuses no activation at all.
    """
    if isinstance(layer, TRANSPOSED):
        return _has_activation(layer)
    if role_of(layer)[0] is not Role.COMPUTE:
        return False
    name = activation_name(layer)
    return name is not None and ACTIVATIONS.get(name, (None,))[0] is not (
        Role.FUSED_ACTIVATION
    )


def post_activation_range(layer):
    """The fixed range of a split layer's activation output, if any."""
    return ACTIVATIONS.get(activation_name(layer), (None, None))[1]


def internal_key(key, part):
    """The graph key of the tensor `part` inside the layer producing `key`."""
    return (key, part)


def internal_parts(graph, op):
    """The tensors TFLite has inside `op`'s layer that need a range.

    Returns:
        A tuple of part names (see `keras_quant.decomposition`):
        `"depthwise"` (SeparableConv), `"pre_activation"` (an activation
        TFLite cannot fuse), `"bn_scale"` (a BatchNormalization that does
        not fold), `"rescale_scale"` (Rescaling with an offset) and
        `"centered"` (Normalization).
    """
    layer = op.layer
    parts = []
    if isinstance(layer, SEPARABLE):
        parts.append("depthwise")
    if splits_activation(layer):
        parts.append("pre_activation")
    if role_of(layer)[0] is Role.FOLD and not _is_group_tail(graph, op):
        parts.append("bn_scale")
    if isinstance(layer, layers.Rescaling) and _nonzero(layer.offset):
        parts.append("rescale_scale")
    if isinstance(layer, layers.Normalization) and not layer.invert:
        parts.append("centered")
    return tuple(parts)


def _nonzero(value):
    return bool(np.any(np.asarray(value) != 0))


def find_points(model_or_graph):
    """Lists the quantization points of a model, in graph order.

    Args:
        model_or_graph: a Functional or Sequential Keras model, or a
            `graph.Graph` already traced from one.

    Returns:
        A list of `QuantPoint`.
    """
    graph = model_or_graph
    if not isinstance(graph, graph_lib.Graph):
        graph = graph_lib.trace(model_or_graph)
    points = [
        QuantPoint(name, key)
        for name, key in zip(graph.input_names, graph.inputs)
        if _is_float(graph.tensors[key])
    ]
    for op in graph.ops:
        points.extend(_op_points(graph, op))
    return points


def _op_points(graph, op):
    role, fixed_range = role_of(op.layer)
    if role is Role.SAME_SCALE:
        return []
    parts = internal_parts(graph, op)
    points = [
        QuantPoint(
            f"{op.path}/{part}", internal_key(op.outputs[0], part), part=part
        )
        for part in parts
    ]
    if "pre_activation" in parts:
        fixed_range = post_activation_range(op.layer)
    for index, key in enumerate(op.outputs):
        if not _is_float(graph.tensors[key]) or _fuses_forward(graph, op, key):
            continue
        suffix = f":{index}" if len(op.outputs) > 1 else ""
        points.append(QuantPoint(op.path + suffix, key, fixed_range))
    return points


def _fuses_forward(graph, op, key):
    """True when `key` disappears into the next op of a fused group."""
    if not _is_group_tail(graph, op) or key in graph.outputs:
        return False
    consumers = graph.consumers(key)
    if len(consumers) != 1:
        return False
    next_role = role_of(consumers[0].layer)[0]
    if next_role is Role.FUSED_ACTIVATION:
        return not _has_activation(op.layer)
    if next_role is Role.FOLD:
        return role_of(op.layer)[0] is Role.COMPUTE and not _has_activation(
            op.layer
        )
    return False


def _is_group_tail(graph, op):
    """True for an op that ends a fused group so far (head or folded BN)."""
    role = role_of(op.layer)[0]
    if role in _GROUP_HEADS:
        return True
    if role is Role.FOLD:
        producer = graph.producer(op.inputs[0])
        return producer is not None and _fuses_forward(
            graph, producer, op.inputs[0]
        )
    return False


def _has_activation(layer):
    return activation_name(layer) not in (None, "linear")


def _is_float(tensor):
    return "float" in str(keras.backend.standardize_dtype(tensor.dtype))
