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

from keras_quant._compat import keras_internals
from keras_quant._compat.keras_internals import STORED_KERNEL
from keras_quant.graph import decomposition
from keras_quant.graph import trace as graph_lib
from keras_quant.modes import MODES
from keras_quant.modes import check_block_size
from keras_quant.modes import parse_mode
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


def fake_quantize_kernel(kernel, channel_axes, bits=8):
    """Per-channel symmetric fake-quant of a kernel, as the export does.

    Args:
        kernel: the kernel tensor.
        channel_axes: its output-channel axes (negative indices); several
            axes are flattened into one channel axis.
        bits: 8 (the TFLite converter's grid) or 4 (ai-edge-quantizer's).

    Returns:
        With 8 bits, the kernel rounded to `scale * [-127, 127]`,
        `scale = max|w| / 127` per channel; with 4 bits, to
        `scale * [-8, 7]`, `scale = max|w| / 7`.
    """
    if bits == 4:
        return _fake_quantize_int4(kernel, channel_axes)
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


def _fake_quantize_int4(kernel, channel_axes):
    shape = ops.shape(kernel)
    kept = len(kernel.shape) - len(channel_axes)
    flat = ops.reshape(kernel, (*shape[:kept], -1))
    bound = ops.max(ops.abs(flat), axis=tuple(range(kept)), keepdims=True)
    quantized = _round_to_int4(flat, ops.maximum(bound, MIN_BOUND) / 7.0)
    return ops.reshape(quantized, shape)


def fake_quantize_blocks(kernel, block_size):
    """A Dense kernel `(inputs, outputs)` fake-quantized to int4 in blocks
    of `block_size` inputs per output, as ai-edge-quantizer stores it: one
    scale `max|w| / 7` per block, rounded to bfloat16 precision."""
    inputs, outputs = kernel.shape
    blocks = ops.reshape(kernel, (inputs // block_size, block_size, outputs))
    bound = ops.max(ops.abs(blocks), axis=1, keepdims=True)
    scale = ops.cast(
        ops.cast(ops.maximum(bound, MIN_BOUND) / 7.0, "bfloat16"), "float32"
    )
    return ops.reshape(_round_to_int4(blocks, scale), (inputs, outputs))


def _round_to_int4(values, scale):
    """`values` on the grid `scale * [-8, 7]`, with a straight-through
    gradient."""
    grid = ops.clip(ops.round(values / scale), -8.0, 7.0) * scale
    return values + ops.stop_gradient(grid - values)


def _quantizer_for(layer, bits, block_size):
    """`(kernel, axes) -> fake-quantized kernel` for `layer`: in blocks for
    a Dense layer when `block_size` is set (ai-edge-quantizer quantizes
    only FULLY_CONNECTED weights in blocks; other kernels stay float)."""
    if block_size is None:
        return lambda kernel, axes: fake_quantize_kernel(kernel, axes, bits)
    if isinstance(layer, layers.Dense):
        return lambda kernel, axes: fake_quantize_blocks(kernel, block_size)
    return lambda kernel, axes: kernel


def fake_quantized_kernels(layer, bits=8, block_size=None):
    """`[(attribute, fake-quantized kernel)]` of `layer`, read from its
    kernel variables in this replica."""
    quantize = _quantizer_for(layer, bits, block_size)
    kernels = []
    for attribute, axes in kernels_of(layer):
        variable = getattr(layer, attribute)
        if not isinstance(variable, keras.Variable):
            # Another block (another replica's thread) holds this layer's
            # kernels: quantizing its tensor would take this replica's
            # kernel out of its gradient.
            raise RuntimeError(
                f"The kernels of layer '{layer.name}' are already "
                "replaced by fake-quantized tensors. `kernels_replaced` "
                "blocks must not nest or span a cross-replica exchange."
            )
        kernels.append(
            (attribute, quantize(ops.convert_to_tensor(variable), axes))
        )
    return kernels


@contextlib.contextmanager
def kernels_replaced(layer, kernels):
    """Inside the block, `layer` computes with `kernels`
    (`fake_quantized_kernels`) in place of its kernel variables.

    The layer is shared by every replica of a `tf.distribute` strategy,
    whose threads take turns at each cross-replica exchange (an observer's
    `all_gather`, an assignment of a mirrored variable): the block must
    hold only computation with no such exchange, or another replica would
    compute with this replica's tensors, and leave them in the layer.
    """
    originals = [
        (attribute, getattr(layer, attribute)) for attribute, _ in kernels
    ]
    for attribute, kernel in kernels:
        object.__setattr__(layer, attribute, kernel)
    try:
        yield
    finally:
        for attribute, variable in originals:
            object.__setattr__(layer, attribute, variable)


def quantized_kernels(layer, bits=8, block_size=None):
    """Inside the block, `layer` computes with fake-quantized kernels
    (`kernels_replaced`: the block must hold no cross-replica exchange)."""
    return kernels_replaced(
        layer, fake_quantized_kernels(layer, bits, block_size)
    )


@keras.saving.register_keras_serializable(package="keras_quant")
class QuantizeWeights(keras.layers.Wrapper):
    """Calls a Conv/Dense-like layer with its kernels fake-quantized.

    Args:
        layer: the layer; its weights are trained, not copied.
        bits: 8 or 4, as `fake_quantize_kernel`.
        block_size: with 4 bits, a Dense kernel's scales are per block of
            this many inputs (`fake_quantize_blocks`); None per channel.
    """

    def __init__(self, layer, bits=8, block_size=None, **kwargs):
        super().__init__(layer, **kwargs)
        self.bits = bits
        self.block_size = block_size

    def get_config(self):
        return {
            **super().get_config(),
            "bits": self.bits,
            "block_size": self.block_size,
        }

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        with quantized_kernels(self.layer, self.bits, self.block_size):
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
        kernels = fake_quantized_kernels(self.layer)
        for step, part in decomposition.plan(self.layer, self.parts):
            # The kernels are swapped in around each step only: an
            # observer exchanges its statistics across replicas, and the
            # other replicas run meanwhile, with the same layer.
            with kernels_replaced(self.layer, kernels):
                value = decomposition.STEPS[step](self.layer, value)
            if part is not None:
                value = self.observer_for(part)(value, training=training)
        return value


def is_quantize_aware(model):
    """Whether `model` came from `quantize_aware`: its observers fake-quantize
    what they observe, so it computes its own int8 graph."""
    return any(observer.quantize for observer in find_observers(model))


def quantize_aware(
    model,
    *,
    momentum=0.999,
    save_modes=None,
    mode="int8",
    block_size=None,
):
    """Returns a model for quantization-aware training of `model`.

    Args:
        model: a float Functional or Sequential model (ranges start empty
            and are learned in the first training steps), or an observed
            model (`observe`) whose collected ranges start the training.
        momentum: weight of the old range in each moving-average update.
            Defaults to `0.999`, tfmot's EMA decay (decision D26).
        save_modes: modes that `save()` exports beside the `.keras` file.
            Defaults to `(mode,)`.
        mode: the export mode to train for: `"int8"` (default) or
            `"int8_only"` (int8 weights and activations), `"int8x4"` (int4
            weights, int8 activations), `"int4_weights"` or
            `"dynamic_int4"` (int4 weights; activations stay float, so only
            the kernels are fake-quantized). Kernels are fake-quantized as
            the export stores them.
        block_size: for `"dynamic_int4"`: Dense kernels in blocks of that
            many inputs (which must divide the layer's input size), as
            `export(..., block_size=...)` writes them; other kernels float.

    Returns:
        An `ObservedModel` sharing `model`'s layers, compiled like `model`
        when `model` is compiled.
    """
    spec = _trainable_spec(mode)
    block_size = check_block_size(parse_mode(mode), block_size)
    check_blocks_fit(model, block_size)
    observed = model if find_observers(model) else observe(model)
    training = _QuantizeAware(
        momentum, spec.weight_bits, block_size, spec.activation_bits == 8
    )
    qat = graph_lib.trace(observed).rebuild(
        training.call_op,
        model_class=ObservedModel,
        name=f"{model.name}_qat",
        save_modes=(parse_mode(mode).value,)
        if save_modes is None
        else save_modes,
        # (an input observer's sample size travels in its config)
        input_samples=getattr(observed, "input_sample_sizes", None),
    )
    set_recording(qat, RECORD_TRAINING)
    if getattr(model, "compiled", False):
        qat.compile_from_config(model.get_compile_config())
    return qat


# Modes a model can be trained for: int8 activations or float ones.
TRAINABLE_MODES = (
    "int8",
    "int8_only",
    "int8x4",
    "int4_weights",
    "dynamic_int4",
)


def _trainable_spec(mode):
    if parse_mode(mode).value not in TRAINABLE_MODES:
        raise ValueError(
            f"quantize_aware trains for one of {list(TRAINABLE_MODES)}. "
            f"Received: mode={mode!r}"
        )
    return MODES[parse_mode(mode)]


def check_blocks_fit(model, block_size):
    if block_size is None:
        return
    for layer in keras_internals.sublayers(model):
        inputs = layer.kernel.shape[0] if isinstance(layer, layers.Dense) else 0
        if inputs % block_size:
            raise ValueError(
                f"Dense layer '{layer.name}' has {inputs} "
                f"inputs, which block_size={block_size} does not divide. "
                "Choose a block size that divides every Dense input size."
            )


class _QuantizeAware:
    def __init__(
        self, momentum, weight_bits=8, block_size=None, activations=True
    ):
        self.momentum = momentum
        self.weight_bits = weight_bits
        self.block_size = block_size
        self.activations = activations  # fake-quantized, or only observed

    def quantizer(self, observer):
        """A quantizing observer that starts from `observer`'s range."""
        config = observer.get_config()
        # A fake-quantizing observer updates alone, at once (it quantizes
        # with the range that includes the batch): its own one-row bank
        # costs fewer ops than a row of the model's.
        config.update(
            quantize=self.activations,
            estimator="ema",
            banked=not self.activations,
        )
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
            wrapper = QuantizeWeights(
                layer,
                bits=self.weight_bits,
                block_size=self.block_size,
                name=f"{layer.name}_qat",
            )
            return wrapper(*args, **kwargs)
        return layer(*args, **kwargs)
