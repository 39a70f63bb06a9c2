"""Collected ranges written into the converter's statistics: the route of
16x8 export and of int8 export with layers kept float.

The fake-quant route that serves int8 does not serve 16x8: the TF 2.21
converter then stores int32 biases (LiteRT's int16 kernels read int64),
nudges zero points off 0, and rejects int16 concatenation. The converter's
own 16x8 path works, but it calibrates on a representative dataset. So:

1. convert the float graph in calibrate-only mode on one dummy
   batch: a float `.tflite` whose activation tensors carry min/max fields;
2. convert the int8 fake-quant graph (`exporter`): the converter maps every
   collected range onto the tensors TFLite actually has (after fusion and
   same-scale propagation);
3. align the two op lists (they come from the same Keras graph) and copy
   each int8 tensor's range into the matching min/max fields;
4. quantize with TFLite's calibration quantizer (int16 activations, int64
   biases), which reads those fields as its statistics;
5. check the result against a Keras simulation of it (symmetric 16-bit
   fake-quant at every range) on inputs drawn from the input ranges: the
   float graph may fold an op into a neighbour that the int8 graph keeps
   apart (a hard_sigmoid's `+ 3` into the convolution's bias), and the
   aligned twins then disagree about what their tensor holds.

int8 with `keep_float` layers takes the same route, quantizing in step 4
with int8 activations and those layers' ops denylisted: the fake-quant
route cannot leave one op float between quantized neighbours.

Steps 1 and 4 use the converter's private calibration API, pinned by the
tested TensorFlow version (see docs/decisions.md).
"""

import difflib
import re

import keras
import numpy as np
import tensorflow as tf

from keras_quant import data as data_lib
from keras_quant._compat import keras_internals
from keras_quant._compat import tensorflow_internals as tf_internals
from keras_quant.errors import ExportError
from keras_quant.runtime import inspection
from keras_quant.runtime import litert

# Ops the int8 fake-quant model adds around float inputs/outputs.
_BOUNDARY_OPS = ("QUANTIZE", "DEQUANTIZE")


def calibrated_float_model(model, converter_factory):
    """The float `.tflite` of `model` with (dummy) min/max statistics."""
    converter = converter_factory(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: iter([litert.zero_inputs(model)])
    return tf_internals.calibrate_only(converter)


def int8_ranges(int8_model):
    """Ranges of an int8 model: per model input, and per non-boundary op.

    Returns:
        `(input ranges, ops)` where `ops` is a list of `(op name, output
        ranges)`; a range is `(min, max)`, or None for an unquantized tensor.
    """
    summary = inspection.summarize(int8_model)
    producers = {o: op for op in summary.ops for o in op.outputs}
    consumers = {}
    for op in summary.ops:
        for i in op.inputs:
            consumers.setdefault(i, []).append(op)

    def range_of(index):
        tensor = summary.tensors[index]
        if tensor.dtype in ("int8", "int16") and len(tensor.scales) == 1:
            return _real_range(tensor)
        for op in consumers.get(index, []):
            if op.name == "QUANTIZE":
                return _real_range(summary.tensors[op.outputs[0]])
        producer = producers.get(index)
        if producer is not None and producer.name == "DEQUANTIZE":
            return _real_range(summary.tensors[producer.inputs[0]])
        return None

    ops = [
        (op.name, [range_of(i) for i in op.outputs])
        for op in summary.ops
        if op.name not in _BOUNDARY_OPS
    ]
    return [range_of(i) for i in summary.inputs], ops


def _real_range(tensor):
    info = np.iinfo(tensor.dtype)
    scale = float(tensor.scales[0])
    zero_point = int(tensor.zero_points[0])
    return ((info.min - zero_point) * scale, (info.max - zero_point) * scale)


def inject_ranges(calibrated, int8_model):
    """Writes the int8 model's ranges into the calibrated model's min/max.

    The float model may have folded ops that the int8 model keeps (a
    BatchNormalization before a convolution folds into its weights when no
    range separates them), so the op lists are aligned as sequences; every
    op of the float model must find its twin.

    Raises:
        ExportError: if some op of the float model has no twin.
    """
    model = tf_internals.read_flatbuffer(calibrated)
    subgraph = model.subgraphs[0]
    float_ops = subgraph.operators
    names = [
        tf_internals.opcode_name(model, op.opcodeIndex) for op in float_ops
    ]
    input_ranges, reference = int8_ranges(int8_model)
    twins = _align(names, [name for name, _ in reference])
    missing = [name for i, name in enumerate(names) if i not in twins]
    if missing:
        raise ExportError(
            "int16x8 (and int8 with `keep_float`) export could not match "
            f"these float ops with the int8 graph's: {missing}. Export "
            "mode='int8' without `keep_float`, and report this model to "
            "keras-quant."
        )
    ranged = set()
    for index, found in zip(subgraph.inputs, input_ranges):
        if found is not None:
            ranged.add(index)
            _set_range(subgraph.tensors[index], found)
    for position, op in enumerate(float_ops):
        _, output_ranges = reference[twins[position]]
        for index, found in zip(op.outputs, output_ranges):
            if found is not None:
                ranged.add(index)
                _set_range(subgraph.tensors[index], found)
    _check_all_ranged(subgraph, float_ops, names, ranged)
    return tf_internals.write_flatbuffer(model)


def _check_all_ranged(subgraph, float_ops, names, ranged):
    """Refuses a model whose calibrated tensors did not all get a range.

    Such a tensor would keep the statistics of the dummy batch, a zero
    scale on which LiteRT aborts the process.
    """
    unranged = [
        name
        for name, op in zip(names, float_ops)
        for index in op.outputs
        if index not in ranged and _has_statistics(subgraph.tensors[index])
    ]
    if unranged:
        raise ExportError(
            "int16x8 (and int8 with `keep_float`) needs a range for every "
            "activation, and keras-quant observes none for the outputs of "
            f"these ops: {unranged}. They stay float in mode='int8' without "
            "`keep_float`; export that instead."
        )


def _has_statistics(tensor):
    quantization = tensor.quantization
    return quantization is not None and quantization.min is not None


def _align(names, reference_names):
    """`{position in names: position in reference_names}` of matching ops."""
    matcher = difflib.SequenceMatcher(
        None, names, reference_names, autojunk=False
    )
    twins = {}
    for block in matcher.get_matching_blocks():
        for offset in range(block.size):
            twins[block.a + offset] = block.b + offset
    return twins


def _set_range(tensor, found):
    quantization = tensor.quantization
    if quantization is None or quantization.min is None:
        return
    quantization.min = np.array([found[0]], np.float32)
    quantization.max = np.array([found[1]], np.float32)


def name_outputs(calibrated, scopes):
    """Puts model outputs back in their layers' name scopes.

    TensorFlow names a function's outputs `Identity`, `Identity_1`, ...,
    and the op producing an output takes that name, losing its scope.

    Args:
        calibrated: `.tflite` bytes.
        scopes: `{output position: scope}`.

    Returns:
        The model bytes with those output tensors renamed `<scope>/output`.
    """
    if not scopes:
        return calibrated
    model = tf_internals.read_flatbuffer(calibrated)
    subgraph = model.subgraphs[0]
    for position, scope in scopes.items():
        tensor = subgraph.tensors[subgraph.outputs[position]]
        tensor.name = f"{scope}/output_{position}".encode()
    return tf_internals.write_flatbuffer(model)


def ops_in_scopes(calibrated, scopes):
    """Names of the ops inside the given TensorFlow name scopes.

    Args:
        calibrated: `.tflite` bytes.
        scopes: `{layer name: scope}`; TensorFlow may have suffixed a scope
            with `_<n>`.

    Raises:
        ExportError: if the scope of some layer holds no op.
    """
    summary = inspection.summarize(calibrated)
    names = [summary.tensors[op.outputs[0]].name for op in summary.ops]
    found, empty = [], []
    for layer, scope in scopes.items():
        pattern = re.compile(rf"(^|/){re.escape(scope)}(_\d+)?/")
        matching = [name for name in names if pattern.search(name)]
        found.extend(matching)
        if not matching:
            empty.append(layer)
    if empty:
        raise ExportError(
            f"These layers become no TFLite op of their own, so nothing can "
            f"be kept float for them: {empty}. (A Dropout or a Flatten "
            "computes nothing; a layer folded into its neighbour is kept "
            "float by naming that neighbour.) Leave them out of `keep_float`."
        )
    return found


def quantize_int8(calibrated, denylisted_nodes=()):
    """Quantizes a model with min/max statistics to int8 (float I/O),
    leaving the `denylisted_nodes` ops in float."""
    return tf_internals.mlir_quantize(calibrated, denylisted_nodes)


def quantize_16x8(calibrated):
    """Quantizes a model with min/max statistics to int16x8 (float I/O)."""
    return tf_internals.quantize_16x8(calibrated)


# Largest disagreement allowed between the 16x8 model and its Keras
# simulation, as a share of the output range. They clip at the same ranges
# and differ by int8 weight rounding (about 1 %); a misplaced range shows up
# as tens of percent.
AGREEMENT = 0.1


def check_against_simulation(
    tflite, simulation, input_ranges, mode, samples=32
):
    """Raises `ExportError` if a statistics-route model strays from its
    simulation.

    Args:
        tflite: the quantized model bytes.
        simulation: a Keras model computing the same graph with each range
            applied as fake-quant (symmetric 16-bit for 16x8).
        input_ranges: `(min, max)` of each model input.
        mode: the `Mode` exported, for the message.
        samples: random inputs to compare on.
    """
    rng = np.random.default_rng(0)
    inputs = [
        rng.uniform(low, high, (samples, *tensor.shape[1:])).astype(
            tensor.dtype
        )
        for tensor, (low, high) in zip(simulation.inputs, input_ranges)
    ]
    structured = keras.tree.pack_sequence_as(
        keras_internals.inputs_structure(simulation), inputs
    )
    # Called eagerly: `predict` would trace a new function for every
    # simulation model, and TensorFlow warns about retracing.
    expected = [
        keras.ops.convert_to_numpy(value)
        for value in data_lib.as_list(simulation(structured, training=False))
    ]
    found = data_lib.as_list(litert.run(tflite, inputs))
    for want, got in zip(expected, found):
        width = float(np.ptp(want)) or 1.0
        if float(np.max(np.abs(want - got))) > AGREEMENT * width:
            raise ExportError(
                f"{mode.value} export produced a model that disagrees with "
                "its Keras simulation: the converter folded this graph "
                "differently from the int8 one. Export mode='int8' without "
                "`keep_float`, and report this model to keras-quant."
            )
