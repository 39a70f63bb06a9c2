"""Layers that keras-quant inserts into a graph (besides observers).

- `FakeQuant` rounds a tensor to the integer grid of a fixed range, the way
  TFLite will; the converter reads it as that tensor's quantization range.
- `Split` calls a layer that TFLite computes as two ops (a Dense with
  softmax, a SeparableConv, a BatchNormalization that does not fold) and
  observes the tensor between those ops. It wraps the original layer, so
  weights stay shared.
- `NameScope` names the TFLite ops of a layer, so that conversion can keep
  them in float (`keep_float`).
"""

import keras
from keras import ops

from keras_quant.graph import decomposition


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
class Split(keras.layers.Wrapper):
    """Calls a layer unchanged and observes tensors TFLite has inside it.

    TFLite computes some layers as two ops (see `keras_quant.decomposition`);
    the tensor between them needs a range. `Split` returns exactly what the
    wrapped layer returns, and feeds each of its `observers` the matching
    internal tensor, computed only while that observer records.

    Args:
        layer: the layer to call; its weights are used, not copied.
        parts: names of the internal tensors, one per observer.
        observers: the `Observer` of each part.
    """

    def __init__(self, layer, parts, observers, **kwargs):
        super().__init__(layer, **kwargs)
        self.parts = tuple(parts)
        self.observers = list(observers)

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.built = True

    def call(self, inputs, training=None, mask=None):
        extra = {} if mask is None else {"mask": mask}
        if self.parts == ("pre_activation",) and self.observers[0].records(
            training
        ):
            # The tensor before the activation, and the output from it:
            # the layer computed once.
            pre, outputs = decomposition.pre_activation_and_output(
                self.layer, inputs, training=training, **extra
            )
            self.observers[0].record_from(lambda: pre, training)
            return outputs
        for part, observer in zip(self.parts, self.observers):
            observer.record_from(
                lambda part=part: decomposition.internal_tensor(
                    self.layer, self.parts, part, inputs
                ),
                training,
            )
        return self.layer(inputs, training=training, **extra)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def observer_for(self, part):
        """The observer of internal tensor `part`."""
        return self.observers[self.parts.index(part)]

    def get_config(self):
        config = super().get_config()
        config["parts"] = list(self.parts)
        config["observers"] = [
            keras.saving.serialize_keras_object(o) for o in self.observers
        ]
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["layer"] = keras.saving.deserialize_keras_object(
            config["layer"], custom_objects=custom_objects
        )
        config["observers"] = [
            keras.saving.deserialize_keras_object(
                o, custom_objects=custom_objects
            )
            for o in config["observers"]
        ]
        return cls(**config)


class NameScope(keras.layers.Layer):
    """Calls a layer under a name of its own, so that the ops it becomes in
    a `.tflite` model can be found by that name.

    Keras opens a name scope per layer call, and TFLite names each op after
    the TensorFlow ops fused into it, so every op computing `layer` gets
    `name` in its name. Used only in graphs built for conversion.

    Args:
        layer: the layer to call; its weights are used, not copied.
        name: the scope, unique in the model.
    """

    def __init__(self, layer, name):
        super().__init__(name=name)
        self.layer = layer

    def call(self, *args, **kwargs):
        return self.layer(*args, **kwargs)

    def compute_output_spec(self, *args, **kwargs):
        return self.layer.compute_output_spec(*args, **kwargs)
