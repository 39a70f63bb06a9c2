"""Layers that keras-quant inserts into a graph (besides observers).

- `FakeQuant` rounds a tensor to the integer grid of a fixed range, the way
  TFLite will; the converter reads it as that tensor's quantization range.
- `PreActivation` computes a Conv or Dense layer without its activation, so
  that the tensor between the layer and an activation TFLite cannot fuse
  (softmax, tanh, ...) gets a range of its own. It wraps the original layer,
  so weights stay shared.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_quant")
class FakeQuant(keras.layers.Layer):
    """Quantizes and dequantizes a tensor with a fixed per-tensor range.

    Args:
        min_value: lower end of the range (at most 0).
        max_value: upper end of the range (at least 0).
        num_bits: 8 for int8 activations; 16 for the int16 activations of
            the 16x8 mode. Defaults to `8`.
        narrow_range: use `[1, 2**num_bits - 1]`, giving a symmetric grid
            around 0 for a symmetric range. Defaults to `False`.

    Example:

    >>> layer = FakeQuant(0.0, 2.55)
    >>> keras.ops.convert_to_numpy(layer(keras.ops.ones((1,)) * 0.123))
    array([0.12], dtype=float32)
    """

    def __init__(
        self, min_value, max_value, num_bits=8, narrow_range=False, **kwargs
    ):
        super().__init__(**kwargs)
        self.min_value = float(min_value)
        self.max_value = float(max_value)
        self.num_bits = int(num_bits)
        self.narrow_range = bool(narrow_range)
        self.supports_masking = True

    def call(self, inputs):
        return keras.quantizers.fake_quant_with_min_max_vars(
            inputs,
            ops.convert_to_tensor(self.min_value),
            ops.convert_to_tensor(self.max_value),
            num_bits=self.num_bits,
            narrow_range=self.narrow_range,
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            min_value=self.min_value,
            max_value=self.max_value,
            num_bits=self.num_bits,
            narrow_range=self.narrow_range,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_quant")
class PreActivation(keras.layers.Wrapper):
    """Calls a wrapped Conv or Dense layer with its activation left out.

    Args:
        layer: the layer to call; its weights are used, not copied.

    Example:

    >>> dense = keras.layers.Dense(2, activation="softmax")
    >>> dense.build((None, 3))
    >>> logits = PreActivation(dense)(keras.ops.ones((1, 3)))
    >>> difference = keras.ops.softmax(logits) - dense(keras.ops.ones((1, 3)))
    >>> bool(keras.ops.max(keras.ops.abs(difference)) < 1e-6)
    True
    """

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.built = True

    def call(self, inputs):
        activation = self.layer.activation
        self.layer.activation = keras.activations.linear
        try:
            return self.layer.call(inputs)
        finally:
            self.layer.activation = activation

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)
