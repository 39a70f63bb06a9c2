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
from ai_edge_litert.interpreter import OpResolverType

from keras_quant import native_stderr


def interpreter(model, num_threads=None, reference=False):
    """An `Interpreter` for a `.tflite` path or the model's bytes; with
    `reference`, on LiteRT's reference kernels (no XNNPACK), the kernels
    TFLM's are written to match."""
    settings = {"num_threads": num_threads}
    if reference:
        settings["experimental_op_resolver_type"] = OpResolverType.BUILTIN_REF
    if isinstance(model, (bytes, bytearray)):
        return Interpreter(model_content=bytes(model), **settings)
    return Interpreter(model_path=os.fspath(model), **settings)


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

    A file whose batch size is fixed (`keras.Input(batch_size=...)`, or an
    export for `target="micro"`) runs in chunks of that size, the last
    one padded and the padding dropped.
    """
    runner = interpreter(model, num_threads=num_threads)
    arrays = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    outputs = _run_chunks(runner, arrays, batch_size, dequantized=True)
    return outputs[0] if len(outputs) == 1 else outputs


def run_raw(model, inputs, reference=False):
    """Runs `model` on `inputs` already in its input types (one array per
    input); returns its outputs as stored (integers for an integer
    output), a list in the Keras model's output order."""
    runner = interpreter(model, reference=reference)
    return _run_chunks(runner, list(inputs), 256, dequantized=False)


def io_details(model):
    """`(input details, output details)` of a `.tflite`, the outputs in
    the Keras model's order: what `quantize` and `dequantize` take."""
    runner = interpreter(model)
    return runner.get_input_details(), output_details(runner)


def _run_chunks(runner, arrays, batch_size, dequantized):
    input_details = runner.get_input_details()
    fixed = fixed_batch(input_details)
    size = fixed or batch_size
    count = len(arrays[0])
    chunks = []
    for start in range(0, count, size):
        batch = [padded(a[start : start + size], fixed) for a in arrays]
        chunks.append(_invoke(runner, input_details, batch, dequantized))
    return [np.concatenate(parts)[:count] for parts in zip(*chunks)]


def fixed_batch(input_details):
    """The batch size a model's inputs fix, or None if it can change."""
    sizes = {int(d["shape_signature"][0]) for d in input_details}
    sizes.discard(-1)
    return sizes.pop() if sizes else None


def padded(values, size):
    """`values` padded with zeros to `size` rows (None: as they are)."""
    values = np.asarray(values)
    if size is None or len(values) == size:
        return values
    padding = np.zeros((size - len(values), *values.shape[1:]), values.dtype)
    return np.concatenate([values, padding])


def _invoke(runner, input_details, batch, dequantized=True):
    for detail, values in zip(input_details, batch):
        shape = [len(values), *detail["shape"][1:]]
        if list(detail["shape"]) != shape:
            runner.resize_tensor_input(detail["index"], shape)
    allocate(runner)
    for detail, values in zip(input_details, batch):
        values = quantize(values, detail) if dequantized else values
        runner.set_tensor(detail["index"], np.asarray(values, detail["dtype"]))
    runner.invoke()
    return [
        dequantize(runner.get_tensor(d["index"]), d)
        if dequantized
        else runner.get_tensor(d["index"])
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
