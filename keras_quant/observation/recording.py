"""When observers record: the recording masks, and the calibration
contract across a `fit`.

`set_recording` sets which steps record (a `RECORD_*` bit set) and
retraces the step functions, so steps that never record carry no observer
op; `observers_paused` stops recording for a block without retracing.

Complete runs only: `RangeCalibration` opens a run before each validation
(`begin_run`: the observers' state is kept aside, then reset) and closes it
when the validation ends (`end_run`, with its epoch). A run that never
closes (an exception or Ctrl-C during validation) is abandoned by the next
`predict`, `evaluate` or export (`abandon_unfinished`): the observers get
back the ranges of the last complete run and stop recording, so neither a
half run nor later data moves them.

The epochs of the ranges and of the weights (`epochs`) travel with the
model (in its config, hence its `.keras` file), and an export whose ranges
are older than its weights warns (`warn_if_stale`).

>>> inputs = keras.Input((2,))
>>> model = keras_quant.observe(keras.Model(inputs, inputs * 2.0))
>>> weights_trained(model, epoch=3); end_run(model, epoch=2)
>>> epochs(model)
Epochs(ranges=2, weights=3)
"""

import contextlib
import dataclasses
import warnings
import weakref

from keras_quant._compat import keras_internals
from keras_quant.observation.observers import RECORD_INFERENCE
from keras_quant.observation.observers import RECORD_OFF
from keras_quant.observation.observers import Observer
from keras_quant.observation.observers import read


def find_observers(model):
    """The `Observer` layers of a model (nested models included)."""
    found = []
    for layer in keras_internals.sublayers(model):
        if isinstance(layer, Observer):
            found.append(layer)
    return found


@contextlib.contextmanager
def observers_paused(model):
    """Stops every observer of `model` from recording inside the block.

    Only the run-time mask changes, so no step function is retraced.
    """
    observers = find_observers(model)
    masks = [read(observer.record_mask) for observer in observers]
    for observer in observers:
        observer.record_mask.assign(RECORD_OFF)
    try:
        yield
    finally:
        for observer, mask in zip(observers, masks):
            observer.record_mask.assign(mask)


def reset_ranges(model):
    """Forgets the collected ranges; inference calls record again."""
    for observer in find_observers(model):
        observer.reset()
    set_recording(model, RECORD_INFERENCE)


def set_recording(model, mask):
    """Sets when the observers of `model` record (a `RECORD_*` bit set).

    Step functions traced for another mask are rebuilt, so that steps which
    never record carry no observer op at all (that is what keeps the cost
    of observers out of training steps).
    """
    observers = find_observers(model)
    changed = any(o.traced_mask != mask for o in observers)
    for observer in observers:
        observer.set_record_mask(mask)
    if changed:
        _rebuild_step_functions(model)


def _rebuild_step_functions(model):
    # Rebuilt in place: `fit`, `evaluate` and `predict` keep calling the
    # attribute after their callbacks' `on_*_begin` ran.
    for kind in ("train", "test", "predict"):
        if getattr(model, f"{kind}_function", None) is not None:
            getattr(model, f"make_{kind}_function")(force=True)


@dataclasses.dataclass
class Epochs:
    """The epoch (1-based, as Keras prints them) whose ranges and weights a
    model holds; None when not set by training."""

    ranges: int = None
    weights: int = None


@dataclasses.dataclass
class _Run:
    epochs: Epochs = dataclasses.field(default_factory=Epochs)
    # Observers' state before an unfinished run (`_state`).
    kept: list = None


_RUNS = weakref.WeakKeyDictionary()


def _run(model):
    if model not in _RUNS:
        _RUNS[model] = _Run()
    return _RUNS[model]


def begin_run(model):
    """Keeps the observers' state aside, then resets them for a new run."""
    observers = find_observers(model)
    _run(model).kept = [_state(observer) for observer in observers]
    for observer in observers:
        observer.reset()


def end_run(model, epoch=None):
    """Closes the run: its ranges are the model's, from `epoch`."""
    run = _run(model)
    run.kept = None
    if epoch is not None:
        run.epochs.ranges = epoch


def weights_trained(model, epoch):
    """Records that the weights now are those of `epoch`."""
    _run(model).epochs.weights = epoch


def epochs(model):
    """The model's `Epochs`."""
    return _run(model).epochs


def restore_epochs(model, ranges, weights):
    """Sets the epochs read from a saved config."""
    _run(model).epochs = Epochs(ranges, weights)


def abandon_unfinished(model):
    """If a run was opened and never closed, gives the observers back their
    state from before it and stops them recording; returns whether it did.
    """
    run = _run(model)
    if run.kept is None:
        return False
    for observer, state in zip(find_observers(model), run.kept):
        _restore(observer, state)
    run.kept = None
    set_recording(model, RECORD_OFF)
    warnings.warn(
        "A validation run that collected ranges did not finish: the "
        "observers keep the ranges of the last complete run and stop "
        "recording. Calibrate again (`observed.evaluate(data)` after "
        "`keras_quant.reset_ranges(observed)`) to replace them.",
        stacklevel=3,
    )
    return True


def _state(observer):
    """What a run keeps aside of `observer`: its state values, and those of
    the replay samples that follow it (`Observer.followers`)."""
    followers = [sample.state_values() for sample in observer.followers]
    return observer.state_values(), followers


def _restore(observer, state):
    """Gives `observer` and its followers back their `_state`."""
    values, followers = state
    observer.restore_state_values(values)
    for sample, kept in zip(observer.followers, followers):
        sample.restore_state_values(kept)


def warn_if_stale(model):
    """Warns when the ranges were collected at an earlier epoch than the
    weights being exported."""
    found = epochs(model)
    if None in (found.ranges, found.weights) or found.ranges >= found.weights:
        return
    warnings.warn(
        f"The ranges come from epoch {found.ranges}, the weights from epoch "
        f"{found.weights}: the export quantizes with ranges older than the "
        "weights (with `validation_freq` > 1, the last epochs had no "
        "validation run). Validate every epoch, or calibrate after `fit` "
        "with `observed.evaluate(x_val, y_val)`.",
        stacklevel=3,
    )
