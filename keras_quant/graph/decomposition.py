"""How TFLite splits one Keras layer into several ops.

Some Keras layers become two TFLite ops with a quantized tensor between them:

- Conv/Dense with an activation TFLite cannot fuse (softmax, tanh, ...):
  CONV_2D/FULLY_CONNECTED, then the activation op (`"pre_activation"`);
- SeparableConv: DEPTHWISE_CONV_2D, then CONV_2D (`"depthwise"`);
- a BatchNormalization that does not fold into a convolution: MUL, then
  ADD (`"bn_scale"`);
- Rescaling with an offset: MUL, then ADD (`"rescale_scale"`);
- Normalization: SUB, then MUL (`"centered"`).

A `plan` lists a layer's steps in TFLite order, each with the name of the
internal tensor it produces (None for a tensor that is not internal).
`internal_tensor` computes one internal tensor from the layer input, for
observers; `LayerStep` layers rebuild the split layer for export, with
fake-quant between the steps. Both use inference semantics.
"""

import contextlib

import keras
from keras import ops

from keras_quant.graph.placement import SEPARABLE


def plan(layer, parts):
    """The steps of `layer` for the internal tensors `parts`.

    Args:
        layer: the Keras layer.
        parts: the internal tensors to expose (see module docstring).

    Returns:
        A list of `(step name, internal tensor name or None)`.
    """
    for part, steps in TWO_STEP_PLANS.items():
        if part in parts:
            return steps
    activation_part = "pre_activation" if "pre_activation" in parts else None
    if isinstance(layer, SEPARABLE):
        return [
            ("depthwise", "depthwise"),
            ("pointwise", activation_part),
            ("activation", None),
        ]
    return [("linear", activation_part), ("activation", None)]


def internal_tensor(layer, parts, part, inputs):
    """Computes the internal tensor `part` of `layer` on `inputs`."""
    value = inputs
    for step, produced in plan(layer, parts):
        value = STEPS[step](layer, value)
        if produced == part:
            return value
    raise ValueError(f"Layer '{layer.name}' has no internal tensor {part!r}.")


def pre_activation_and_output(layer, inputs, **kwargs):
    """`(pre-activation tensor, output)` of a Conv/Dense-like `layer`,
    computing the layer once: it is called (`layer(inputs, **kwargs)`)
    with a linear activation, then its activation is applied, as its
    `call` applies it.

    Example:

    >>> dense = keras.layers.Dense(2, activation="softmax")
    >>> pre, out = pre_activation_and_output(dense, keras.ops.ones((1, 3)))
    >>> bool(keras.ops.all(out == dense(keras.ops.ones((1, 3)))))
    True
    """
    with _linear_activation(layer):
        pre = layer(inputs, **kwargs)
    return pre, layer.activation(pre)


def _without_activation(layer, inputs):
    with _linear_activation(layer):
        return layer.call(inputs)


@contextlib.contextmanager
def _linear_activation(layer):
    """`layer` with a linear activation inside the block."""
    activation = layer.activation
    layer.activation = keras.activations.linear
    try:
        yield
    finally:
        layer.activation = activation


def _activation(layer, inputs):
    return layer.activation(inputs)


def _depthwise(layer, inputs):
    return ops.depthwise_conv(
        inputs,
        layer.depthwise_kernel,
        strides=layer.strides,
        padding=layer.padding,
        data_format=layer.data_format,
        dilation_rate=layer.dilation_rate,
    )


def _pointwise(layer, inputs):
    outputs = ops.conv(
        inputs,
        layer.pointwise_kernel,
        strides=1,
        padding="valid",
        data_format=layer.data_format,
    )
    if layer.use_bias:
        outputs = outputs + _along_channels(layer, layer.bias, outputs)
    return outputs


def _along_channels(layer, vector, like):
    shape = [1] * len(like.shape)
    axis = -1 if getattr(layer, "data_format", None) != "channels_first" else 1
    shape[axis] = -1
    return ops.reshape(vector, shape)


def _bn_multiplier(layer):
    multiplier = ops.rsqrt(layer.moving_variance + layer.epsilon)
    if layer.scale:
        multiplier = multiplier * layer.gamma
    return multiplier


def _bn_shape(layer, inputs):
    shape = [1] * len(inputs.shape)
    shape[layer.axis] = -1
    return shape


def _bn_scale(layer, inputs):
    multiplier = ops.reshape(_bn_multiplier(layer), _bn_shape(layer, inputs))
    return inputs * ops.cast(multiplier, inputs.dtype)


def _bn_offset(layer, inputs):
    offset = -layer.moving_mean * _bn_multiplier(layer)
    if layer.center:
        offset = offset + layer.beta
    offset = ops.reshape(offset, _bn_shape(layer, inputs))
    return inputs + ops.cast(offset, inputs.dtype)


def _rescale_scale(layer, inputs):
    return inputs * ops.cast(layer.scale, inputs.dtype)


def _rescale_offset(layer, inputs):
    return inputs + ops.cast(layer.offset, inputs.dtype)


def _normalize_center(layer, inputs):
    return inputs - ops.cast(layer.mean, inputs.dtype)


def _normalize_scale(layer, inputs):
    return inputs / ops.cast(_normalize_spread(layer), inputs.dtype)


def _normalize_spread(layer):
    return ops.maximum(ops.sqrt(layer.variance), keras.config.epsilon())


def constant_multiplier(layer):
    """The constant a layer multiplies by (a TFLite MUL), or None.

    BatchNormalization (when it does not fold), Normalization and
    Rescaling each multiply by a constant vector, which TFLite quantizes
    per tensor.
    """
    if isinstance(layer, keras.layers.BatchNormalization):
        return _bn_multiplier(layer)
    if isinstance(layer, keras.layers.Normalization) and not layer.invert:
        return 1.0 / _normalize_spread(layer)
    if isinstance(layer, keras.layers.Rescaling):
        return layer.scale
    return None


STEPS = {
    "linear": _without_activation,
    "activation": _activation,
    "depthwise": _depthwise,
    "pointwise": _pointwise,
    "bn_scale": _bn_scale,
    "bn_offset": _bn_offset,
    "rescale_scale": _rescale_scale,
    "rescale_offset": _rescale_offset,
    "normalize_center": _normalize_center,
    "normalize_scale": _normalize_scale,
}

# Layers whose two TFLite ops do not involve an activation.
TWO_STEP_PLANS = {
    "bn_scale": [("bn_scale", "bn_scale"), ("bn_offset", None)],
    "rescale_scale": [
        ("rescale_scale", "rescale_scale"),
        ("rescale_offset", None),
    ],
    "centered": [("normalize_center", "centered"), ("normalize_scale", None)],
}


class LayerStep(keras.layers.Layer):
    """One step of a split layer, for export graphs (never saved).

    Args:
        layer: the split layer, whose weights the step reads.
        step: a key of `STEPS`.
    """

    def __init__(self, layer, step, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer
        self.step = step

    def call(self, inputs):
        return STEPS[self.step](self.layer, inputs)
