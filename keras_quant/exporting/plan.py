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

from keras_quant import modes as modes_lib
from keras_quant.conversion import checks
from keras_quant.exporting import files
from keras_quant.measurement import evaluation
from keras_quant.modes import AUTO
from keras_quant.modes import MODES
from keras_quant.modes import TARGETS
from keras_quant.observation import qat


@dataclasses.dataclass(frozen=True)
class Destination:
    """One file to write: a mode (a `Mode`, or `"auto"`), its path and, for
    an integer input/output mode, the integer type."""

    mode: object
    path: str
    io_dtype: str = None


@dataclasses.dataclass(frozen=True)
class Choice:
    """What `mode="auto"` may give up, and where the model will run."""

    max_accuracy_drop: float = 1.0
    target: str = "cpu"


@dataclasses.dataclass(frozen=True)
class ExportPlan:
    """Everything one export run will do.

    Attributes:
        destinations: the `Destination`s, in the order to write them.
        validation_data: `(x, y)` or a dataset to measure on, or None.
        batch_size: batch size for measuring.
        keep_float: layers kept float (`int8` only).
        keep_8bit: layers whose weights stay int8 (modes with 4-bit
            weights only).
        choice: the `Choice` of an `"auto"` destination, else None.
        report_dir: folder for `report.json` and `report.html`, or None.
        block_size: input features per weight scale (`dynamic_int4`), or
            None for per-channel scales.
    """

    destinations: tuple
    validation_data: object = None
    batch_size: int = 256
    keep_float: tuple = ()
    keep_8bit: tuple = ()
    choice: Choice = None
    report_dir: str = None
    block_size: int = None


def plan_export(
    model,
    filepaths,
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
    """Validates an export request; returns its `ExportPlan`.

    Args:
        model: the model to export.
        filepaths: `{mode: filepath}`; modes as `Mode`s, their names or
            `"auto"`.
        io_dtype, validation_data, batch_size, keep_float,
        max_accuracy_drop, target, report_dir, block_size, keep_8bit: as
            for `keras_quant.export`.

    Raises:
        ValueError: an unknown mode or target, a path not ending in
            `.tflite`, `io_dtype` without an integer-I/O mode, `keep_float`
            outside a single `int8` export, `keep_8bit` outside a single
            export with 4-bit weights, `max_accuracy_drop` or `target`
            without `"auto"`, or `"auto"` without what it measures with.
        UnsupportedModelError: a model keras-quant cannot trace.
        UnwritablePathError: a destination is a folder, or its folder (or
            `report_dir`) cannot be written.

    Example:

    >>> inputs = keras.Input((3,))
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    >>> plan = plan_export(model, {"float16": tmp_dir + "/m.tflite"})
    >>> [(d.mode.value, d.io_dtype) for d in plan.destinations]
    [('float16', None)]
    """
    checks.check_model(model)
    modes = [_parse(mode) for mode in filepaths]
    destinations = tuple(
        Destination(mode, files.check_filepath(path), _io_dtype(mode, io_dtype))
        for mode, path in zip(modes, filepaths.values())
    )
    _check_io_dtype_used(modes, io_dtype)
    for mode in modes:
        if mode != AUTO:
            modes_lib.check_block_size(mode, block_size)
    qat.check_blocks_fit(model, block_size)
    choice = _choice(model, modes, validation_data, max_accuracy_drop, target)
    return ExportPlan(
        destinations=destinations,
        validation_data=validation_data,
        batch_size=batch_size,
        keep_float=_layer_option(
            model, modes, "keep_float", keep_float, checks.check_keep_float
        ),
        keep_8bit=_layer_option(
            model, modes, "keep_8bit", keep_8bit, checks.check_keep_8bit
        ),
        choice=choice,
        report_dir=None
        if report_dir is None
        else files.check_folder(os.fspath(report_dir), "report_dir"),
        block_size=block_size,
    )


def _parse(mode):
    return AUTO if mode == AUTO else modes_lib.parse_mode(mode)


def _io_dtype(mode, io_dtype):
    if mode == AUTO:
        return io_dtype
    if not MODES[mode].integer_io:
        return None
    return modes_lib.check_io_dtype(mode, io_dtype)


def _check_io_dtype_used(modes, io_dtype):
    """`io_dtype` for modes that have no integer I/O is a mistake."""
    if io_dtype is None or any(m == AUTO or MODES[m].integer_io for m in modes):
        return
    modes_lib.check_io_dtype(modes[0], io_dtype)  # raises, naming the fix


def _layer_option(model, modes, option, layers, check):
    """`layers` for a per-layer `option` (`keep_float`, `keep_8bit`),
    checked by `check(model, mode, layers)` for the single mode it allows."""
    if not layers:
        return ()
    if len(modes) != 1 or modes[0] == AUTO:
        raise ValueError(
            f"`{option}` applies to a single export, in one mode. "
            f"Received: modes={[getattr(m, 'value', m) for m in modes]}."
        )
    return check(model, modes[0], layers)


def _choice(model, modes, validation_data, max_accuracy_drop, target):
    if AUTO not in modes:
        if max_accuracy_drop is not None or target is not None:
            raise ValueError(
                "`max_accuracy_drop` and `target` choose a mode, so they "
                f"need mode='auto'. Received: modes="
                f"{[m.value for m in modes]}."
            )
        return None
    choice = Choice(
        1.0 if max_accuracy_drop is None else max_accuracy_drop,
        target or "cpu",
    )
    _check_choice(model, choice, validation_data)
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
    if validation_data is None:
        raise ValueError(
            "mode='auto' measures every candidate on real data: pass "
            "`validation_data=(x, y)` (or a `tf.data.Dataset`)."
        )
    if not evaluation.is_compiled(model):
        raise ValueError(
            f"mode='auto' judges accuracy with the model's compiled loss "
            f"and metrics, and model '{model.name}' is not compiled. Call "
            "`model.compile(loss=..., metrics=[...])` first."
        )
