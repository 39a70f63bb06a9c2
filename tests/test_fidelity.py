"""The engine's files against Keras float and the TFLite converter, on
small models that reproduce what went wrong on keras.applications models:

- int16x8 ADD with power-of-two scales (MobileNetV3Small's preprocessing):
  LiteRT refused the file (`add.cc: input1_shift <= 0`);
- int16x8 biases cut at int32's limits (a squeeze-excite convolution
  holding hard-sigmoid's +3 over a small int16 input scale);
- concatenations requantized between nearly equal scales (DenseNet121):
  a gain error the converter's single scale per chain does not have;
- the range of a BatchNormalization that does not fold given to its
  inner MUL instead of its output.
"""

import contextlib
import io
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert import schema_py_generated as schema
from keras import layers

import keras_quant
from keras_quant.conversion import engine
from keras_quant.conversion import graphs
from keras_quant.conversion import rewrites
from keras_quant.conversion import tensor_map
from keras_quant.conversion.converter import run_converter
from keras_quant.conversion.routes import convert
from keras_quant.runtime import flatbuffer
from keras_quant.runtime import inspection
from keras_quant.runtime import litert


def smooth_images(n, rng, size=16, channels=3):
    """`n` sums of random 2-D sinusoids, each stretched to exactly [0, 1]."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = np.zeros((n, size, size, channels))
    for image in images:
        for channel in range(channels):
            frequencies = rng.uniform(0.5, 3.0, size=(3, 2))
            phases = rng.uniform(0, 2 * np.pi, 3)
            image[..., channel] = sum(
                np.sin(2 * np.pi * (fy * yy + fx * xx) + phase)
                for (fy, fx), phase in zip(frequencies, phases)
            )
    images -= images.min(axis=(1, 2, 3), keepdims=True)
    images /= images.max(axis=(1, 2, 3), keepdims=True)
    return images.astype("float32")


def sqnr_db(expected, found):
    expected = np.asarray(expected, np.float64)
    noise = np.sum((expected - found) ** 2)
    return float(10 * np.log10(np.sum(expected**2) / noise))


def converter_file(model, calibration, supported_ops=None):
    """The stock converter's post-training file, calibrated one sample at
    a time."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: (
        [calibration[i : i + 1]] for i in range(len(calibration))
    )
    if supported_ops is not None:
        converter.target_spec.supported_ops = supported_ops
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return converter.convert()


def calibrated(model, data):
    observed = keras_quant.observe(model)
    observed.predict(data, verbose=0)
    return observed


# --------------------------------------------------------------------------
# int16x8: ADD with power-of-two scales


def hard_sigmoid(x):
    return layers.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)


def mobilenet_v3_like(size=16):
    """MobileNetV3's pieces: its preprocessing (`Rescaling(1 / 127.5,
    offset=-1)`: a MUL, then an ADD of -1), hard-swish, squeeze-excite
    and a residual ADD."""
    inputs = keras.Input((size, size, 3))
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = layers.Conv2D(8, 3, strides=2, padding="same")(x)
    x = layers.Activation("hard_swish")(x)
    y = layers.DepthwiseConv2D(3, padding="same")(x)
    y = layers.Activation("hard_swish")(y)
    squeezed = layers.GlobalAveragePooling2D(keepdims=True)(y)
    squeezed = layers.Conv2D(4, 1, activation="relu")(squeezed)
    squeezed = hard_sigmoid(layers.Conv2D(8, 1)(squeezed))
    y = layers.Multiply()([y, squeezed])
    y = layers.Conv2D(8, 1)(y)
    x = layers.Add()([x, y])
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10)(x))


@pytest.fixture(scope="module")
def mobilenet_v3_int16():
    """The model, its calibration and held-out images in [0, 255], and
    its int16x8 file."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    model = mobilenet_v3_like()
    calibration = 255.0 * smooth_images(32, rng)
    heldout = 255.0 * smooth_images(16, rng)
    tflite = convert(calibrated(model, calibration), "int16x8")
    return model, calibration, heldout, tflite


def test_int16_add_with_power_of_two_scales_runs_in_litert(
    mobilenet_v3_int16,
):
    """Pixels in [0, 255] make the preprocessing's product [0, 2], its -1
    and its sum [-1, 1]: int16 scales of exactly 2**-14, 2**-15 and
    2**-15. With `pot_scale_int16` set (ai-edge-quantizer keeps the
    schema's default), LiteRT's power-of-two ADD kernel refused the input
    scale above the output's (`convert` raised ExportError); the general
    kernel, which the converter selects, runs it."""
    model, _, heldout, tflite = mobilenet_v3_int16
    parsed = flatbuffer.read(tflite)
    subgraph = parsed.subgraphs[0]
    adds = [
        op
        for op in subgraph.operators
        if flatbuffer.op_name(parsed, op) == "ADD"
        and subgraph.tensors[op.outputs[0]].type == schema.TensorType.INT16
    ]
    assert adds and not any(op.builtinOptions.potScaleInt16 for op in adds)
    exponents = [
        [
            np.log2(subgraph.tensors[i].quantization.scale[0])
            for i in [*op.inputs, *op.outputs]
        ]
        for op in adds
    ]
    assert any(  # the case LiteRT refused is there
        np.allclose(found, np.round(found), atol=1e-3)
        and max(found[:2]) > found[2]
        for found in exponents
    )
    found = litert.run(tflite, heldout)
    assert np.all(np.isfinite(found)) and found.shape == (len(heldout), 10)


def test_int16_file_is_as_close_to_float_as_the_converters(
    mobilenet_v3_int16,
):
    """The converter keeps HARD_SWISH float in 16x8 (it has no int16
    kernel); so does the engine. Its squeeze-excite convolution takes
    hard-sigmoid's +3 in its bias, 3.6e9 steps of an int16 input scale
    times a weight scale: ai-edge-quantizer cut it to int32's limit (36
    dB against the converter's 46); the engine writes it whole in the
    int64 bias 16x8 has."""
    model, calibration, heldout, tflite = mobilenet_v3_int16
    summary = inspection.summarize(tflite)
    biases = [bias for _, _, bias in summary.weights() if bias is not None]
    assert biases and all(bias.dtype == "int64" for bias in biases)
    for bias in biases:
        values = bias_values(tflite, bias.index)
        assert not np.isin(values, [-(2**31), 2**31 - 1]).any()  # not cut
    reference = converter_file(
        model,
        calibration,
        [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,  # HARD_SWISH has no 16x8 kernel
        ],
    )
    expected = model.predict(heldout, verbose=0)
    stock = sqnr_db(expected, litert.run(reference, heldout))
    assert sqnr_db(expected, litert.run(tflite, heldout)) >= stock - 0.5


def bias_values(tflite, index):
    """The integers stored for the int64 tensor `index` of `tflite`."""
    parsed = flatbuffer.read(tflite)
    tensor = parsed.subgraphs[0].tensors[index]
    return np.frombuffer(bytes(parsed.buffers[tensor.buffer].data), np.int64)


def test_general_int16_arithmetic_leaves_int8_alone():
    inputs = keras.Input((4,))
    outputs = layers.Add()([layers.Dense(4)(inputs), inputs])
    model = calibrated(
        keras.Model(inputs, outputs),
        np.random.default_rng(0).normal(size=(32, 4)).astype("float32"),
    )
    int8 = convert(model, "int8")
    assert rewrites.general_int16_arithmetic(int8) is int8


# --------------------------------------------------------------------------
# int8: concatenations that must share one scale


def growing_concatenations(steps=8, growth=0.01, size=16):
    """A DenseNet-like chain: each step concatenates a 1x1 convolution of
    the first (ReLU) features, scaled by a little more each time, so that
    every concatenation's range is about 1 % wider than the one before
    (in a DenseNet121 block they went 0.0498, 0.0504, 0.0541, ...). The
    output averages over the image, which keeps any error common to all
    pixels."""
    inputs = keras.Input((size, size, 3))
    first = layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = first
    projections = []
    for step in range(steps):
        projection = layers.Conv2D(4, 1, use_bias=False)
        projections.append((projection, 1.0 + growth * (step + 1)))
        x = layers.Concatenate()([x, projection(first)])
    x = layers.AveragePooling2D(2)(x)
    model = keras.Model(inputs, layers.GlobalAveragePooling2D()(x))
    for projection, factor in projections:
        projection.set_weights([factor * np.eye(4)[None, None]])
    return model


def test_a_chain_of_concatenations_shares_one_scale():
    """Each concatenation kept its own range, and ai-edge-quantizer
    requantized the previous one's output into it: between nearly equal
    scales every small value rounds back to the same integer, a gain
    error of the scale ratio that averaging keeps (3 to 6 dB below the
    converter here). The engine now gives each chain the union of its
    ranges, as the converter does: no requantization, and the converter's
    SQNR or better."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)
    model = growing_concatenations()
    # Mostly small values, as after a ReLU, with a few large ones.
    calibration = smooth_images(32, rng) ** 4
    heldout = smooth_images(16, rng) ** 4
    tflite = convert(calibrated(model, calibration), "int8")

    summary = inspection.summarize(tflite)
    names = [op.name for op in summary.ops]
    assert names.count("QUANTIZE") == 1  # the model input's only
    for op in summary.ops:
        if op.name in ("CONCATENATION", "AVERAGE_POOL_2D"):
            quantizations = {
                (
                    float(summary.tensors[i].scales[0]),
                    int(summary.tensors[i].zero_points[0]),
                )
                for i in [*op.inputs, *op.outputs]
            }
            assert len(quantizations) == 1, op

    expected = model.predict(heldout, verbose=0)
    found = sqnr_db(expected, litert.run(tflite, heldout))
    stock = converter_file(model, calibration)
    assert found >= sqnr_db(expected, litert.run(stock, heldout)) - 0.5


def test_shared_ranges_join_through_same_scale_ops_only():
    inputs = keras.Input((4, 4, 2))
    a = layers.Conv2D(2, 1, name="a")(inputs)
    b = layers.Conv2D(2, 1, name="b")(inputs)
    joined = layers.Concatenate()([a, b])
    outputs = layers.Conv2D(2, 1, name="after")(
        layers.AveragePooling2D(2)(joined)
    )
    model = keras.Model(inputs, outputs)
    float_tflite = run_converter(model, keras_quant.Mode.FLOAT32)
    parsed = flatbuffer.read(float_tflite)
    subgraph = parsed.subgraphs[0]
    names = [flatbuffer.tensor_name(t.name) for t in subgraph.tensors]
    activations = {
        names[i]: (-float(k), float(k))
        for k, op in enumerate(subgraph.operators, start=1)
        for i in op.outputs
    }
    shared = engine.shared_ranges(float_tflite, activations)
    groups = {}
    for name, bounds in shared.items():
        groups.setdefault(bounds, []).append(name)
    by_op = {
        flatbuffer.op_name(parsed, op): names[op.outputs[0]]
        for op in subgraph.operators
    }
    joined_group = next(
        group for group in groups.values() if by_op["CONCATENATION"] in group
    )
    assert by_op["AVERAGE_POOL_2D"] in joined_group
    assert len(joined_group) == 4  # both convolutions, concat, pool
    assert shared[joined_group[0]] == (-4.0, 4.0)
    last = names[subgraph.operators[-1].outputs[0]]
    assert shared[last] == activations[last]  # computed, not shared
    # Ops kept float join nothing.
    assert engine.shared_ranges(float_tflite, activations, [".*"]) == (
        activations
    )


# --------------------------------------------------------------------------
# int8: a BatchNormalization that does not fold


def test_unfolded_batch_norm_inner_mul_keeps_its_own_range():
    """A BatchNormalization after a concatenation is a MUL, then an ADD
    that TFLite fuses with the ReLU after it. Its output's observer used
    to give its range (negative values, a smaller maximum) to the MUL; the
    MUL now takes its own range, from the replay."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(2)
    inputs = keras.Input((8, 8, 3))
    a = layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    b = layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = layers.Concatenate()([a, b])
    norm = layers.BatchNormalization()
    x = layers.ReLU()(norm(x))
    model = keras.Model(inputs, layers.GlobalAveragePooling2D()(x))
    data = smooth_images(32, rng, size=8)
    norm.set_weights(
        [
            np.linspace(0.5, 2.0, 8),  # gamma > 0: the MUL is >= 0
            np.linspace(-1.0, 0.5, 8),
            np.full(8, 0.3),
            np.full(8, 0.04),
        ]
    )
    observed = calibrated(model, data)
    scoped, ops = graphs.scoped_float_graph(observed)
    float_tflite = run_converter(scoped, keras_quant.Mode.FLOAT32)
    ranges = tensor_map.observed_ranges(float_tflite, observed, ops)
    parsed = flatbuffer.read(float_tflite)
    subgraph = parsed.subgraphs[0]
    (mul,) = [
        flatbuffer.tensor_name(subgraph.tensors[op.outputs[0]].name)
        for op in subgraph.operators
        if flatbuffer.op_name(parsed, op) == "MUL"
    ]
    replayed = engine.replayed_ranges(float_tflite, [data])
    assert replayed[mul][0] == 0.0
    assert ranges.get(mul, replayed[mul]) == replayed[mul]
