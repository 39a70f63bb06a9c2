"""The public export, and the one pipeline every export goes through.

`export` (one file), `export_many` (several modes of one model), the
`TFLiteExport` callback, the save hook and the command line all build an
`ExportPlan` (`plan.plan_export`) and hand it to `run`, which writes each
destination with the step its mode needs (`STEPS`) and, if asked, the
report.
"""

import dataclasses

from keras_quant.conversion import routes as conversion
from keras_quant.conversion import shared_work
from keras_quant.errors import KerasQuantError
from keras_quant.exporting import auto
from keras_quant.exporting import report as report_lib
from keras_quant.exporting import single
from keras_quant.exporting import tensorflow_process
from keras_quant.exporting import workers
from keras_quant.exporting.plan import plan_export
from keras_quant.modes import AUTO
from keras_quant.observation import recording

# How a destination is written: "auto" chooses its mode, any other mode
# is written as it is.
STEPS = {AUTO: auto.export_auto}


def run(model, plan, on_error=None):
    """Writes every destination of `plan`; returns their `ExportResult`s.

    Args:
        model: the model to export.
        plan: an `ExportPlan` from `plan_export`.
        on_error: if given, `on_error(mode, error)` is called for a
            destination that fails with a `KerasQuantError`, and the others
            go on; otherwise the error is raised.

    On a worker of a multi-worker strategy other than the chief, writes
    nothing and returns `[]` (`workers.exports_here`).
    """
    recording.abandon_unfinished(model)  # on every worker: same ranges
    if not workers.exports_here(model):
        return []
    recording.warn_if_stale(model)
    with shared_work.one_run():
        return _run_here_or_in_child(model, plan, on_error)


def _run_here_or_in_child(model, plan, on_error):
    """`run` past the checks: the files, then the report."""
    if tensorflow_process.needed():
        results = tensorflow_process.run(model, plan, export_pickled, on_error)
    else:
        results = _write(model, plan, on_error)
    if plan.report_dir is not None and results:
        report_lib.write_report(
            plan.report_dir,
            model,
            results,
            plan.validation_data,
            selection=results[0].selection if len(results) == 1 else None,
        )
    return results


def _write(model, plan, on_error):
    """The files of `plan`, each with the step its mode needs."""
    shared = {}  # float32 size and float predictions, computed once
    results = []
    epochs = recording.epochs(model)
    # The engine's child quantizes while this process does the rest.
    conversion.start(
        model, [d.options for d in plan.destinations if d.options is not None]
    )
    for destination in plan.destinations:
        step = STEPS.get(destination.mode, single.export_mode)
        try:
            result = step(model, destination, plan, shared)
            results.append(
                dataclasses.replace(
                    result,
                    ranges_epoch=epochs.ranges,
                    weights_epoch=epochs.weights,
                )
            )
        except KerasQuantError as error:
            if on_error is None:
                raise
            on_error(destination.mode, error)
    return results


def warm_up(model, modes):
    """Starts the child process that exporting `model` in `modes` will
    need, and returns at once: the engine's child on TensorFlow (for the
    modes the engine quantizes, and "auto"), the TensorFlow child on JAX
    or PyTorch. A callback that will export calls it as training begins,
    so that its first export does not wait for the child to start (about
    1 s on TensorFlow, 5-7 s on the other backends, decision D53); this
    process pays only the spawn.
    """
    if not workers.exports_here(model):
        return
    engine = any(m == AUTO or conversion.uses_engine(model, m) for m in modes)
    if tensorflow_process.needed():
        tensorflow_process.warm_up(engine)
    elif engine:
        conversion.warm_up()


def export_pickled(pickled_model, plan):
    """What a TensorFlow child process runs for a model on another backend
    (`tensorflow_process`): unpickles the model, writes the files of
    `plan` into a temporary folder it removes before answering; returns
    `([(result, tflite bytes), ...], [(mode, error), ...])`."""
    import pickle
    import tempfile

    from keras_quant import _registration

    _registration.register()  # before the model's classes are looked up
    model = pickle.loads(pickled_model)
    failures = []
    with tempfile.TemporaryDirectory(prefix="keras-quant-") as folder:
        results = _write(
            model,
            tensorflow_process.inside(plan, folder),
            lambda mode, error: failures.append((mode, error)),
        )
        written = [(result, _read(result.path)) for result in results]
    return written, failures


def _read(path):
    with open(path, "rb") as stream:
        return stream.read()


def export(
    model,
    filepath,
    mode="int8",
    *,
    io_dtype=None,
    validation_data=None,
    batch_size=256,
    keep_float=(),
    max_accuracy_drop=None,
    target=None,
    report_dir=None,
    block_size=None,
    keep_8bit=(),
):
    """Writes `model` as a `.tflite` file in one quantization mode.

    Args:
        model: a Keras model; for `int8`, `int8_only` and `int16x8` an
            observed model (`observe`) that has collected ranges, or a model
            loaded from such a `.keras` file.
        filepath: destination ending in `.tflite`; missing folders are made.
        mode: one of `"float32"`, `"dynamic"`, `"int8"` (float fallback,
            float input/output), `"int8_only"`, `"float16"`, `"int16x8"`,
            `"int4_weights"`, `"dynamic_int4"`, `"int8x4"` (int4 weights,
            int8 activations); or `"auto"`: the smallest, fastest mode for
            `target` whose accuracy on `validation_data` is within
            `max_accuracy_drop` of float (see `keras_quant.exporting.auto`).
            Defaults to `"int8"`.
        io_dtype: `"int8"` (default) or `"uint8"`, for `"int8_only"` only.
        validation_data: optional data in any form `fit` takes: `(x, y)`
            arrays, a finite `tf.data.Dataset` (batched or not), a
            `keras.utils.PyDataset` or a Python generator yielding `(x, y)`
            batches; read once. When given, the result carries float and
            quantized metrics; data without labels (`x` alone) gives the
            output comparison only.
        batch_size: batch size for the validation run. Defaults to `256`.
        keep_float: names of layers to keep in float in `int8` mode: their
            TFLite ops compute in float between quantized neighbours, for
            layers that quantization hurts most (see `analyze`).
        max_accuracy_drop: for `"auto"`: how much worse than float the
            model's first compiled metric may get, in points (hundredths)
            for a metric that grows like accuracy, in percent of the float
            value for one that shrinks (and for the loss, used when there
            is no metric). Defaults to `1.0`.
        target: where the file will run. With a fixed mode, `"micro"`
            (TensorFlow Lite for Microcontrollers) exports with static
            shapes (batch 1 unless the model fixes one), rewrites the ops
            TFLM lacks where an exact equivalent exists (GELU), refuses
            the others naming layer and op, and runs the file in TFLM
            before writing it: `result.micro` holds the metrics measured
            there, the difference from LiteRT in int8 steps, the arena
            and the ops (needs `pip install 'keras-quant[micro]'`). For
            `"auto"`: `"cpu"` (default), `"gpu"`, `"integer_only"`
            (Edge TPU-like accelerators), `"micro"`, or `"size"` (the
            smallest file: int4 weights first).
        report_dir: if given, a folder to write `report.json` and
            `report.html` into (see `keras_quant.exporting.report`); with
            `validation_data` it shows activation histograms and per-point
            errors.
        block_size: for `"dynamic_int4"`: 32, 64, 128 or 256 input
            features share one weight scale (it must divide each Dense
            layer's input size). Defaults to one scale per output channel.
        keep_8bit: names of layers whose weights stay int8 (per channel)
            in a mode with 4-bit weights (`"int4_weights"`,
            `"dynamic_int4"`, `"int8x4"`): the layers 4 bits hurt most (see
            `analyze(..., mode=...)`).

    Returns:
        An `ExportResult`; None on a worker of a multi-worker strategy
        other than the chief, which writes nothing.

    Raises:
        ValueError: unknown mode, bad `io_dtype`, a path not ending in
            `.tflite`, or `keep_float` (`keep_8bit`) naming unknown layers
            or used with another mode than `int8` (a 4-bit mode).
        UnsupportedModelError: not a Functional or Sequential Keras model.
        NotCalibratedError: a range-based mode on a model without ranges.
        NonFiniteActivationError: observers saw NaN or Inf values.
        UnwritablePathError: the destination cannot be written.
        ExportError: the converted model breaks the mode's contract.

    Example:

    >>> inputs = keras.Input((3,))
    >>> dense = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    >>> model = keras_quant.observe(dense)
    >>> _ = model.predict(np.random.rand(32, 3).astype("float32"), verbose=0)
    >>> result = export(model, tmp_dir + "/m.tflite", mode="int8_only")
    >>> result.mode, result.io_dtype
    (<Mode.INT8_ONLY: 'int8_only'>, 'int8')
    """
    plan = plan_export(
        model,
        {mode: filepath},
        io_dtype=io_dtype,
        validation_data=validation_data,
        batch_size=batch_size,
        keep_float=keep_float,
        max_accuracy_drop=max_accuracy_drop,
        target=target,
        report_dir=report_dir,
        block_size=block_size,
        keep_8bit=keep_8bit,
    )
    results = run(model, plan)
    return results[0] if results else None  # None: not the chief


def export_many(
    model,
    filepaths,
    *,
    io_dtype=None,
    validation_data=None,
    batch_size=256,
    report_dir=None,
    on_error=None,
):
    """Exports several modes of one model, converting float32 once.

    Args:
        model: as for `export`.
        filepaths: `{mode: filepath}`, in the order to export.
        io_dtype: as for `export`; applied to integer input/output modes.
        validation_data: as for `export`.
        batch_size: as for `export`.
        report_dir: as for `export`; one report compares all the modes.
        on_error: if given, `on_error(mode, error)` is called for a mode that
            fails with a `KerasQuantError`, and the other modes go on;
            otherwise the error is raised.

    Returns:
        The `ExportResult` of each mode that was written.
    """
    plan = plan_export(
        model,
        filepaths,
        io_dtype=io_dtype,
        validation_data=validation_data,
        batch_size=batch_size,
        report_dir=report_dir,
    )
    return run(model, plan, on_error=on_error)
