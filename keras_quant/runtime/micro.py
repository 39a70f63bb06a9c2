"""Running a `.tflite` in TensorFlow Lite for Microcontrollers (TFLM).

TFLM is the runtime the post-training guide names for integer-only
models. The `tflite-micro` package (the `[micro]` extra) ships its
interpreter with the reference kernels a microcontroller build uses. TFLM
plans every tensor into one arena of a size fixed up front, runs the
file's static shapes one invocation at a time, and ends the process
(segmentation fault) on an arena far too small: `run` and `problem`
belong in a child process (`conversion.isolation.run_isolated`), where
`smallest_arena` also probes each size in a forked process of its own.

Neither Keras nor TensorFlow is imported here.

Example (in a child process, as export runs it):

>>> from keras_quant.conversion.isolation import run_isolated
>>> from keras_quant.conversion.routes import convert
>>> inputs = keras.Input((3,), batch_size=1)
>>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
>>> found = run_isolated(run, convert(model, "float32"), [np.ones((4, 3))])
>>> found.outputs[0].shape, found.arena_bytes > 0, found.ops
((4, 2), True, ('FULLY_CONNECTED',))
"""

import dataclasses
import importlib.util
import os

import numpy as np

from keras_quant import native_stderr
from keras_quant.runtime import flatbuffer
from keras_quant.runtime import litert

PACKAGE = "tflite_micro"

MISSING = (
    "target='micro' runs the file in TensorFlow Lite for Microcontrollers "
    "to verify it, and the `tflite-micro` package is not installed: pip "
    "install 'keras-quant[micro]'."
)

# Arena sizes are probed to this many bytes (TFLM aligns to 16).
ARENA_STEP = 16

# The largest arena tried: 64 MiB is beyond any microcontroller.
MAX_ARENA = 64 << 20


@dataclasses.dataclass(frozen=True)
class MicroRun:
    """What TFLM computed for a batch of samples.

    Attributes:
        outputs: one array per output of the file (its own order), the raw
            values (integers for an integer output), one row per sample.
        arena_bytes: the smallest tensor arena, to `ARENA_STEP` bytes, in
            which TFLM allocated and ran the model.
        ops: the builtin ops of the file's main graph, sorted.
    """

    outputs: list
    arena_bytes: int
    ops: tuple


def available():
    """Whether the `tflite-micro` package is installed."""
    return importlib.util.find_spec(PACKAGE) is not None


def run(tflite, inputs):
    """Runs `tflite` in TFLM on `inputs` (one array per model input, in
    the file's input types) with its smallest arena; returns a `MicroRun`.

    Samples go through in chunks of the file's fixed batch size, the last
    one padded with zeros and the padding dropped from the outputs.

    Raises:
        RuntimeError: TFLM cannot allocate or run the model; the message
            holds what TFLM printed (e.g. "Didn't find op for builtin
            opcode 'GELU'").
    """
    tflite = bytes(tflite)
    arena = smallest_arena(tflite)
    interpreter = _interpreter(tflite, arena)
    details = [interpreter.get_input_details(i) for i in range(len(inputs))]
    batch = int(details[0]["shape"][0])
    count, outputs = len(inputs[0]), _count(tflite, "outputs")
    chunks = []
    for start in range(0, count, batch):
        for index, (values, detail) in enumerate(zip(inputs, details)):
            chunk = litert.padded(values[start : start + batch], batch)
            interpreter.set_input(chunk.astype(detail["dtype"]), index)
        _checked(interpreter.invoke)
        chunks.append([interpreter.get_output(i) for i in range(outputs)])
    outputs = [np.concatenate(parts)[:count] for parts in zip(*chunks)]
    return MicroRun(outputs, arena, tuple(op_names(tflite)))


def problem(tflite, arena=None):
    """Why TFLM cannot allocate `tflite` (in `arena` bytes; defaults to
    more than enough) and run it once on zeros, in one line; None if it
    can."""
    tflite = bytes(tflite)
    try:
        interpreter = _interpreter(tflite, arena or _generous_arena(tflite))
        for index in range(_count(tflite, "inputs")):
            detail = interpreter.get_input_details(index)
            zeros = np.zeros(detail["shape"], detail["dtype"])
            interpreter.set_input(zeros, index)
        _checked(interpreter.invoke)
    except RuntimeError as error:
        return " ".join(str(error).split())
    return None


def file_check(tflite):
    """What TFLM makes of a `.tflite` on its own (no data, no model):
    `{"runtime", "runs", "problem", "arena_bytes", "ops", "missing_ops"}`,
    where `problem` is TFLM's reason when it cannot run the file once on
    zeros and `missing_ops` the file's builtin ops TFLM has no kernel for.
    Run it in a child process (`keras-quant inspect --target micro` does).
    """
    from keras_quant.targets import DEPLOYMENTS
    from keras_quant.targets import MICRO

    tflite = bytes(tflite)
    ops = op_names(tflite)
    reason = problem(tflite)
    return {
        "runtime": f"tflite-micro {version()}",
        "runs": reason is None,
        "problem": reason,
        "arena_bytes": None if reason else smallest_arena(tflite),
        "ops": ops,
        "missing_ops": DEPLOYMENTS[MICRO].missing(ops),
    }


def smallest_arena(tflite):
    """The smallest arena, to `ARENA_STEP` bytes, in which TFLM allocates
    `tflite` and runs it once; each size is tried in a forked process, so
    a size that crashes TFLM only ends that process.

    Raises:
        RuntimeError: not even `MAX_ARENA` bytes are enough, or TFLM
            refuses the model whatever the size; with TFLM's reason.
    """
    high = _generous_arena(tflite)
    while not _fits(tflite, high):
        if high >= MAX_ARENA:
            raise RuntimeError(
                f"TFLM cannot allocate the model: {problem(tflite)}"
            )
        high = min(2 * high, MAX_ARENA)
    low = 0  # known not to fit
    while high - low > ARENA_STEP:
        middle = (low + high) // 2 // ARENA_STEP * ARENA_STEP
        if middle <= low:
            break
        if _fits(tflite, middle):
            high = middle
        else:
            low = middle
    return high


def op_names(tflite):
    """The builtin op names of the main graph of `tflite`, sorted, once
    each."""
    model = flatbuffer.read(tflite)
    return sorted(
        {flatbuffer.op_name(model, op) for op in model.subgraphs[0].operators}
    )


def registered_ops():
    """The builtin ops the installed TFLM has kernels for, sorted.

    TFLM looks up every op's kernel before it prepares any, so a model of
    one op whose kernel is missing fails with "Didn't find op for builtin
    opcode", whatever its tensors; each builtin op of the schema is tried
    that way in a forked child. `targets.MICRO_OPS` is this list for the
    pinned package (`tests/test_micro.py` compares them).
    """
    from ai_edge_litert import schema_py_generated as schema

    found = []
    for name, code in sorted(vars(schema.BuiltinOperator).items()):
        if name.startswith("_") or name == "CUSTOM":
            continue
        said = _in_fork(_load_problem, _one_op_model(code))
        if "Didn't find op" not in said:
            found.append(name)
    return found


def _one_op_model(code):
    """A model of one op of builtin `code`, from one float to another."""
    from ai_edge_litert import schema_py_generated as schema

    opcode = schema.OperatorCodeT()
    opcode.builtinCode = code
    opcode.deprecatedBuiltinCode = min(code, 127)  # 127: see builtinCode
    opcode.version = 1
    subgraph = schema.SubGraphT()
    subgraph.tensors = []
    for name in (b"x", b"y"):
        tensor = schema.TensorT()
        tensor.shape, tensor.type, tensor.buffer = [1], 0, 0  # FLOAT32
        tensor.name = name
        subgraph.tensors.append(tensor)
    subgraph.inputs, subgraph.outputs = [0], [1]
    operator = schema.OperatorT()
    operator.opcodeIndex, operator.inputs, operator.outputs = 0, [0], [1]
    subgraph.operators = [operator]
    model = schema.ModelT()
    model.version = 3
    model.buffers = [schema.BufferT()]
    model.operatorCodes = [opcode]
    model.subgraphs = [subgraph]
    return flatbuffer.write(model)


def _load_problem(tflite):
    """What TFLM says loading `tflite`, in one line ("" if it loads)."""
    try:
        _interpreter(tflite, 1 << 16)
    except Exception as error:  # noqa: BLE001  the text is the answer
        return str(error)
    return ""


def _in_fork(function, *args):
    """`function(*args)` (text) computed in a forked child; what it
    returned, or "" if the child crashed."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        os.close(read)
        try:
            os.write(write, function(*args).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as stream:
        said = stream.read().decode(errors="replace")
    os.waitpid(child, 0)
    return said


def _generous_arena(tflite):
    """TFLM's own default arena (ten times the model) plus 64 KiB."""
    return (10 * len(tflite) + (64 << 10)) // ARENA_STEP * ARENA_STEP


def _fits(tflite, arena):
    """Whether TFLM runs `tflite` once in `arena` bytes, tried in a forked
    child (a crash there is a no)."""
    return _in_fork(_runs_once, tflite, arena) == "yes"


def _runs_once(tflite, arena):
    return "yes" if problem(tflite, arena) is None else "no"


def _interpreter(tflite, arena):
    from tflite_micro.python.tflite_micro import runtime

    return _checked(runtime.Interpreter.from_bytes, tflite, arena_size=arena)


def _checked(call, *args, **kwargs):
    """`call(...)`, with what TFLM printed on a failure in the error."""
    with native_stderr.captured_text() as printed:
        try:
            return call(*args, **kwargs)
        except RuntimeError as error:
            said = " | ".join(line for line in printed().splitlines() if line)
            message = f"{error}: {said}" if said else str(error)
            raise RuntimeError(message) from error


def _count(tflite, kind):
    """How many `kind` ("inputs" or "outputs") the main graph has."""
    return len(getattr(flatbuffer.read(tflite).subgraphs[0], kind))


def version():
    """The installed `tflite-micro` version."""
    from importlib import metadata

    return metadata.version("tflite-micro")
