"""Running a `.tflite` model in the LiteRT interpreter over numpy data.

`run` feeds batches through `ai_edge_litert`'s interpreter, quantizing
float inputs and dequantizing integer outputs with the model's own I/O
parameters, so a quantized model is called exactly like the Keras model.

Example:

>>> from keras_quant.conversion.routes import convert
>>> inputs = keras.Input((3,))
>>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
>>> tflite = convert(model, "float32")
>>> run(tflite, np.ones((5, 3), "float32")).shape
(5, 2)
"""

import os
import re
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from keras_quant import native_stderr


def interpreter(model, num_threads=None):
    """An `Interpreter` for a `.tflite` path or the model's bytes."""
    if isinstance(model, (bytes, bytearray)):
        return Interpreter(model_content=bytes(model), num_threads=num_threads)
    return Interpreter(model_path=os.fspath(model), num_threads=num_threads)


def allocate(runner):
    """`runner.allocate_tensors()`, hiding LiteRT's notice that it created
    its XNNPACK delegate (shown if the allocation fails)."""
    with native_stderr.captured():
        runner.allocate_tensors()


def quantize(values, detail):
    """Float `values` to the integer type of an input `detail`."""
    dtype = np.dtype(detail["dtype"])
    if not np.issubdtype(dtype, np.integer):
        return np.asarray(values, dtype)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    q = np.round(np.asarray(values, np.float64) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(values, detail):
    """Integer `values` of an output `detail` back to float32."""
    if not np.issubdtype(np.dtype(detail["dtype"]), np.integer):
        return np.asarray(values, np.float32)
    scale, zero_point = detail["quantization"]
    return ((values.astype(np.float64) - zero_point) * scale).astype(np.float32)


def run(model, inputs, batch_size=256, num_threads=None):
    """Runs a `.tflite` model over `inputs` and returns float outputs.

    Args:
        model: path to a `.tflite` file, or its bytes.
        inputs: an array, or a list of arrays for several inputs (in the
            order of the model's inputs).
        batch_size: samples per invocation. Defaults to `256`.
        num_threads: interpreter threads. Defaults to LiteRT's choice.

    Returns:
        An array, or a list of arrays for several outputs, in the Keras
        model's output order.
    """
    runner = interpreter(model, num_threads=num_threads)
    arrays = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    input_details = runner.get_input_details()
    count = len(arrays[0])
    chunks = []
    for start in range(0, count, batch_size):
        batch = [a[start : start + batch_size] for a in arrays]
        chunks.append(_invoke(runner, input_details, batch))
    outputs = [np.concatenate(parts) for parts in zip(*chunks)]
    return outputs[0] if len(outputs) == 1 else outputs


def _invoke(runner, input_details, batch):
    for detail, values in zip(input_details, batch):
        shape = [len(values), *detail["shape"][1:]]
        if list(detail["shape"]) != shape:
            runner.resize_tensor_input(detail["index"], shape)
    allocate(runner)
    for detail, values in zip(input_details, batch):
        runner.set_tensor(detail["index"], quantize(values, detail))
    runner.invoke()
    return [
        dequantize(runner.get_tensor(d["index"]), d)
        for d in output_details(runner)
    ]


def output_details(runner):
    """Output details in the Keras model's output order.

    The interpreter's own output order is not the model's; the serving
    signature names them `output_0`, `output_1`, ... in model order.
    (Inputs keep the model's order in both.)
    """
    details = runner.get_output_details()
    signatures = runner.get_signature_list()
    if not signatures:
        return details
    signature = runner.get_signature_runner(next(iter(signatures)))
    named = signature.get_output_details()
    positions = {name: re.fullmatch(r"output_(\d+)", name) for name in named}
    if not all(positions.values()):
        return details  # not a Keras 3 serving signature: keep its order
    order = sorted(named, key=lambda name: int(positions[name].group(1)))
    by_index = {d["index"]: d for d in details}
    return [by_index[named[name]["index"]] for name in order]


def zero_inputs(keras_model):
    """One all-zero sample per input of a Keras (or tf_keras) model."""
    return [
        np.zeros(
            [1, *tensor.shape[1:]],
            getattr(tensor.dtype, "as_numpy_dtype", tensor.dtype),
        )
        for tensor in keras_model.inputs
    ]


def latency(model, sample, runs=200, num_threads=1):
    """Median single-invocation time in seconds for one batch `sample`."""
    runner = interpreter(model, num_threads=num_threads)
    arrays = sample if isinstance(sample, (list, tuple)) else [sample]
    _invoke(runner, runner.get_input_details(), arrays)
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        runner.invoke()
        timings.append(time.perf_counter() - start)
    return float(np.median(timings))


def problem(path, invoke=False):
    """Why LiteRT cannot allocate (or, with `invoke`, run once on zeros)
    the `.tflite` at `path`, in one line; None if it can.

    LiteRT verifies a model's flatbuffer structure but trusts its
    operators: a file that passes the verifier yet gives an op the wrong
    inputs (one flipped opcode byte turns MAX_POOL_2D into SPLIT) can
    segfault in `allocate_tensors`. Call this through
    `conversion.isolation.run_isolated` on files you did not write.
    """
    try:
        runner = interpreter(path)
        allocate(runner)
        if invoke:
            for detail in runner.get_input_details():
                zeros = np.zeros(detail["shape"], detail["dtype"])
                runner.set_tensor(detail["index"], zeros)
            runner.invoke()
    except Exception as error:  # noqa: BLE001  LiteRT's reason, any kind
        return " ".join(str(error).split()) or type(error).__name__
    return None
