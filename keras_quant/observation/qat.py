"""Quantization-aware training (QAT) for Keras 3 models.

`quantize_aware(model)` returns a trainable model that computes what the
int8 TFLite model will compute, so training can adapt the weights to it:

- activations: at every quantization point of `placement` (the same points
  as `observe`), an `Observer(quantize=True)` tracks the range with a
  moving average on training steps and fake-quantizes with it; the range is
  frozen at inference;
- weights: each Conv/Dense-like layer is wrapped in `QuantizeWeights`,
  which fake-quantizes its kernels per output channel, symmetric, to
  [-127, 127] (scale = max |w| / 127), as the TFLite converter does;
- gradients pass straight through the rounding
  (`keras.quantizers.fake_quant_with_min_max_vars`).

BatchNormalization folding: TFLite multiplies a conv kernel by the
per-output-channel factor gamma / sqrt(var + eps) before quantizing it.
Per-channel symmetric quantization commutes with a per-channel scale
(round(s w / (s m / 127)) = round(w / (m / 127)) for any s), so quantizing
the unfolded kernel gives the folded kernel TFLite quantizes: no folding is
needed during training. Only the int32 bias rounding differs.

Export needs no data: `keras_quant.export(qat_model, path, "int8")`.

Example:

    qat = keras_quant.quantize_aware(observed_or_float_model)
    qat.fit(x, y, epochs=3)
    keras_quant.export(qat, "model.tflite", mode="int8_only")
"""

import contextlib

import keras
from keras import layers
from keras import ops

from keras_quant._compat.keras_internals import STORED_KERNEL
from keras_quant.graph import decomposition
from keras_quant.graph import trace as graph_lib
from keras_quant.observation.layers import Split
from keras_quant.observation.observed_model import ObservedModel
from keras_quant.observation.observed_model import observe
from keras_quant.observation.observers import RECORD_TRAINING
from keras_quant.observation.observers import Observer
from keras_quant.observation.observers import read
from keras_quant.observation.recording import find_observers
from keras_quant.observation.recording import set_recording

# Layer type -> (kernel attribute, output-channel axes) for each kernel.
# Depthwise kernels (h, w, in, multiplier) are per (in, multiplier) pair.
KERNELS = {
    layers.Dense: ((STORED_KERNEL, (-1,)),),
    layers.Conv1D: ((STORED_KERNEL, (-1,)),),
    layers.Conv2D: ((STORED_KERNEL, (-1,)),),
    layers.Conv3D: ((STORED_KERNEL, (-1,)),),
    layers.DepthwiseConv1D: (("kernel", (-2, -1)),),
    layers.DepthwiseConv2D: (("kernel", (-2, -1)),),
    layers.SeparableConv1D: (
        ("depthwise_kernel", (-2, -1)),
        ("pointwise_kernel", (-1,)),
    ),
    layers.SeparableConv2D: (
        ("depthwise_kernel", (-2, -1)),
        ("pointwise_kernel", (-1,)),
    ),
    layers.Conv1DTranspose: (("kernel", (-2,)),),
    layers.Conv2DTranspose: (("kernel", (-2,)),),
}

# The smallest per-channel bound, so that an all-zero channel has a scale.
MIN_BOUND = 1e-8


def kernels_of(layer):
    """`(attribute, channel axes)` of each kernel of `layer`, or `()`."""
    for layer_type in type(layer).__mro__:
        if layer_type in KERNELS:
            return KERNELS[layer_type]
    return ()


def fake_quantize_kernel(kernel, channel_axes):
    """Per-channel symmetric int8 fake-quant of a kernel, as TFLite does.

    Args:
        kernel: the kernel tensor.
        channel_axes: its output-channel axes (negative indices); several
            axes are flattened into one channel axis.

    Returns:
        The kernel rounded to `scale * [-127, 127]`, `scale = max|w| / 127`
        per channel.
    """
    shape = ops.shape(kernel)
    kept = len(kernel.shape) - len(channel_axes)
    flat = ops.reshape(kernel, (*shape[:kept], -1))
    bound = ops.maximum(
        ops.max(ops.abs(flat), axis=tuple(range(kept))), MIN_BOUND
    )
    quantized = keras.quantizers.fake_quant_with_min_max_vars(
        flat, -bound, bound, num_bits=8, narrow_range=True, axis=-1
    )
    return ops.reshape(quantized, shape)


@contextlib.contextmanager
def quantized_kernels(layer):
    """Inside the block, `layer` computes with fake-quantized kernels."""
    originals = []
    for attribute, axes in kernels_of(layer):
        variable = getattr(layer, attribute)
        originals.append((attribute, variable))
        object.__setattr__(
            layer,
            attribute,
            fake_quantize_kernel(ops.convert_to_tensor(variable), axes),
        )
    try:
        yield
    finally:
        for attribute, variable in originals:
            object.__setattr__(layer, attribute, variable)


@keras.saving.register_keras_serializable(package="keras_quant")
class QuantizeWeights(keras.layers.Wrapper):
    """Calls a Conv/Dense-like layer with its kernels fake-quantized.

    Args:
        layer: the layer; its weights are trained, not copied.
    """

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        with quantized_kernels(self.layer):
            return self.layer.call(inputs)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)


@keras.saving.register_keras_serializable(package="keras_quant")
class QuantizeSplit(Split):
    """A layer TFLite computes as two ops, computed as those ops with the
    kernels and the tensor between them fake-quantized.

    A standalone BatchNormalization computed this way uses its moving
    statistics in training too (frozen batch norm).
    """

    def call(self, inputs, training=None, mask=None):
        value = inputs
        with quantized_kernels(self.layer):
            for step, part in decomposition.plan(self.layer, self.parts):
                value = decomposition.STEPS[step](self.layer, value)
                if part is not None:
                    value = self.observer_for(part)(value, training=training)
        return value


def is_quantize_aware(model):
    """Whether `model` came from `quantize_aware`: its observers fake-quantize
    what they observe, so it computes its own int8 graph."""
    return any(observer.quantize for observer in find_observers(model))


def quantize_aware(model, *, momentum=0.999, save_modes=("int8",)):
    """Returns a model for quantization-aware training of `model`.

    Args:
        model: a float Functional or Sequential model (ranges start empty
            and are learned in the first training steps), or an observed
            model (`observe`) whose collected ranges start the training.
        momentum: weight of the old range in each moving-average update.
            Defaults to `0.999`, tfmot's EMA decay (decision D26).
        save_modes: modes that `save()` exports beside the `.keras` file.
            Defaults to `("int8",)`.

    Returns:
        An `ObservedModel` sharing `model`'s layers, compiled like `model`
        when `model` is compiled.
    """
    observed = model if find_observers(model) else observe(model)
    qat = graph_lib.trace(observed).rebuild(
        _QuantizeAware(momentum).call_op,
        model_class=ObservedModel,
        name=f"{model.name}_qat",
        save_modes=save_modes,
    )
    set_recording(qat, RECORD_TRAINING)
    if getattr(model, "compiled", False):
        qat.compile_from_config(model.get_compile_config())
    return qat


class _QuantizeAware:
    def __init__(self, momentum):
        self.momentum = momentum

    def quantizer(self, observer):
        """A quantizing observer that starts from `observer`'s range."""
        config = observer.get_config()
        config.update(quantize=True, estimator="ema")
        quantizer = Observer.from_config(config)
        quantizer.momentum.assign(self.momentum)
        if observer.calibrated and observer.fixed_range is None:
            low, high = observer.range()
            quantizer.min_.assign(low)
            quantizer.max_.assign(high)
            quantizer.batches_seen_.assign(read(observer.batches_seen_))
        return quantizer

    def call_op(self, op, args, kwargs):
        layer = op.layer
        if isinstance(layer, Observer):
            return self.quantizer(layer)(*args, **kwargs)
        if isinstance(layer, Split):
            split = QuantizeSplit(
                layer.layer,
                layer.parts,
                [self.quantizer(o) for o in layer.observers],
                name=layer.name,
            )
            return split(*args, **kwargs)
        if kernels_of(layer):
            return QuantizeWeights(layer, name=f"{layer.name}_qat")(
                *args, **kwargs
            )
        return layer(*args, **kwargs)
