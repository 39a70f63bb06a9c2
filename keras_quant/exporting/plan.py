"""An export, resolved and validated once before any work starts.

`plan_export` turns what a caller asked for (the API's `export`, the
`TFLiteExport` callback, the save hook, the command line) into an
`ExportPlan`: every mode parsed, every destination checked writable, the
integer I/O type, `keep_float` and the `auto` budget validated. The
pipeline (`exporting.api.run`) then trusts the plan and validates nothing
twice.
"""

import dataclasses
import os

from keras_quant import data as data_lib
from keras_quant import modes as modes_lib
from keras_quant.conversion import checks
from keras_quant.exporting import files
from keras_quant.measurement import evaluation
from keras_quant.measurement import micro_check
from keras_quant.modes import AUTO
from keras_quant.modes import MODES
from keras_quant.modes import TARGETS
from keras_quant.observation import qat
from keras_quant.options import ConvertOptions
from keras_quant.targets import DEPLOYMENTS


@dataclasses.dataclass(frozen=True)
class Destination:
    """One file to write: a mode (a `Mode`, or `"auto"`), its path and,
    for a fixed mode, its `ConvertOptions` (None for `"auto"`, whose
    `Choice` makes one per candidate)."""

    mode: object
    path: str
    options: ConvertOptions = None


@dataclasses.dataclass(frozen=True)
class Choice:
    """What `mode="auto"` may give up, where the model will run, and the
    integer input/output type of an integer-only candidate."""

    max_accuracy_drop: float = 1.0
    target: str = "cpu"
    io_dtype: str = None

    @property
    def deployment_target(self):
        """The target every candidate must run in (`targets`), or None."""
        return self.target if self.target in DEPLOYMENTS else None


@dataclasses.dataclass(frozen=True)
class ExportPlan:
    """Everything one export run will do.

    Attributes:
        destinations: the `Destination`s, in the order to write them.
        validation_data: `(x, y)` arrays to measure on (y None without
            labels: outputs only), or None; read once by `plan_export`
            from any form `fit` takes.
        batch_size: batch size for measuring.
        choice: the `Choice` of an `"auto"` destination, else None.
        report_dir: folder for `report.json` and `report.html`, or None.
    """

    destinations: tuple
    validation_data: object = None
    batch_size: int = 256
    choice: Choice = None
    report_dir: str = None


def plan_export(
    model,
    filepaths,
    *,
    validation_data=None,
    batch_size=256,
    max_accuracy_drop=None,
    target=None,
    report_dir=None,
    **options,
):
    """Validates an export request; returns its `ExportPlan`.

    Args:
        model: the model to export.
        filepaths: `{mode: filepath}`; modes as `Mode`s, their names or
            `"auto"`.
        validation_data, batch_size, max_accuracy_drop, target,
        report_dir: as for `keras_quant.export`.
        **options: fields of `ConvertOptions` (`io_dtype`, `keep_float`,
            `keep_8bit`, `block_size`), as for `keras_quant.export`.

    Raises:
        ValueError: an unknown mode or target, a path not ending in
            `.tflite`, `io_dtype` without an integer-I/O mode, `keep_float`
            outside a single `int8` export, `keep_8bit` outside a single
            export with 4-bit weights, a choosing `target` or
            `max_accuracy_drop` without `"auto"`, or `"auto"` without what
            it measures with; `validation_data` whose inputs or labels
            hold NaN or infinity (the message counts them).
        UnsupportedModelError: a model keras-quant cannot trace.
        UnwritablePathError: a destination is a folder, or its folder (or
            `report_dir`) cannot be written.

    Example:

    >>> inputs = keras.Input((3,))
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    >>> plan = plan_export(model, {"float16": tmp_dir + "/m.tflite"})
    >>> [(d.mode.value, d.options.io_dtype) for d in plan.destinations]
    [('float16', None)]
    """
    checks.check_model(model)
    validation_data = _read_once(model, validation_data)
    modes = [_parse(mode) for mode in filepaths]
    _check_single_mode_options(modes, options)
    choice = _choice(model, modes, validation_data, max_accuracy_drop, target)
    if choice is not None:
        choice = dataclasses.replace(choice, io_dtype=options.get("io_dtype"))
    fixed_target = None if choice is not None else target
    destinations = tuple(
        Destination(
            mode,
            files.check_filepath(path),
            _options(model, mode, options, fixed_target),
        )
        for mode, path in zip(modes, filepaths.values())
    )
    _check_io_dtype_used(modes, options.get("io_dtype"))
    qat.check_blocks_fit(model, options.get("block_size"))
    return ExportPlan(
        destinations=destinations,
        validation_data=validation_data,
        batch_size=batch_size,
        choice=choice,
        report_dir=None
        if report_dir is None
        else files.check_folder(os.fspath(report_dir), "report_dir"),
    )


def _read_once(model, validation_data):
    """`validation_data` read into `(x, y)` arrays once (y None without
    labels), whatever form `fit` would take it in: every mode, the report
    and a child process then measure on the same arrays, and a generator
    is read only once. Inputs or labels holding NaN or infinity are
    refused: every figure measured on them would be NaN."""
    if validation_data is None:
        return None
    ranks = [len(tensor.shape) for tensor in model.inputs]
    x, y = data_lib.as_arrays(validation_data, input_ranks=ranks)
    data_lib.check_finite(x, y)
    return x, y


def _parse(mode):
    return AUTO if mode == AUTO else modes_lib.parse_mode(mode)


def _options(model, mode, options, target):
    """The checked `ConvertOptions` of a fixed mode; None for `"auto"`.

    `io_dtype` reaches only the integer input/output modes of a plan that
    also holds others (`_check_io_dtype_used` refuses it where none has
    integer I/O).
    """
    if mode == AUTO:
        return None
    if not MODES[mode].integer_io:
        options = {**options, "io_dtype": None}
    made = ConvertOptions(mode, target=target, **options)
    checks.check_options(model, made)
    checks.check_static_shapes(model, made)
    if made.target is not None:
        micro_check.check_available()
    return made


def _check_io_dtype_used(modes, io_dtype):
    """`io_dtype` for modes that have no integer I/O is a mistake."""
    if io_dtype is None or any(m == AUTO or MODES[m].integer_io for m in modes):
        return
    modes_lib.check_io_dtype(modes[0], io_dtype)  # raises, naming the fix


def _check_single_mode_options(modes, options):
    """The per-layer options name layers of one export, in one mode."""
    for option in ("keep_float", "keep_8bit"):
        if options.get(option) and (len(modes) != 1 or modes[0] == AUTO):
            raise ValueError(
                f"`{option}` applies to a single export, in one mode. "
                f"Received: modes={[getattr(m, 'value', m) for m in modes]}."
            )


def _choice(model, modes, validation_data, max_accuracy_drop, target):
    if AUTO not in modes:
        choosing = target is not None and target not in DEPLOYMENTS
        if max_accuracy_drop is not None or choosing:
            raise ValueError(
                "`max_accuracy_drop` and `target` "
                f"{sorted(set(TARGETS) - set(DEPLOYMENTS))} choose a mode, "
                "so they need mode='auto' (a fixed mode takes target "
                f"{sorted(DEPLOYMENTS)}). Received: modes="
                f"{[m.value for m in modes]}, target={target!r}."
            )
        return None
    choice = Choice(
        1.0 if max_accuracy_drop is None else max_accuracy_drop,
        target or "cpu",
    )
    _check_choice(model, choice, validation_data)
    if choice.deployment_target is not None:
        micro_check.check_available()
    return choice


def _check_choice(model, choice, validation_data):
    if choice.target not in TARGETS:
        raise ValueError(
            f"Expected `target` to be one of {sorted(TARGETS)}. Received: "
            f"target={choice.target!r}"
        )
    if not choice.max_accuracy_drop >= 0:
        raise ValueError(
            "Expected `max_accuracy_drop` >= 0 (how much worse than float "
            "is acceptable). Received: "
            f"max_accuracy_drop={choice.max_accuracy_drop}"
        )
    if validation_data is None or validation_data[1] is None:
        raise ValueError(
            "mode='auto' measures every candidate's accuracy on real, "
            "labelled data: pass `validation_data=(x, y)` (or a dataset or "
            "generator yielding `(x, y)` batches)."
        )
    if not evaluation.is_compiled(model):
        raise ValueError(
            f"mode='auto' judges accuracy with the model's compiled loss "
            f"and metrics, and model '{model.name}' is not compiled. Call "
            "`model.compile(loss=..., metrics=[...])` first."
        )
