"""One batched update per step: the same ranges as each observer alone, a
few operations per point in the traced step, none where nothing records,
and XLA."""

import collections

import keras
import numpy as np
import pytest

import keras_quant
from keras_quant.conversion import graphs
from keras_quant.observation import collection
from keras_quant.observation import recording
from keras_quant.observation.observers import RECORD_ALWAYS
from keras_quant.observation.observers import Observer
from keras_quant.observation.observers import read
from tests.conftest import traced_graph

RNG = np.random.default_rng(0)
ESTIMATORS = ("minmax", "ema", "percentile")


def point_tensor(x, k):
    """The tensor of point `k` (1, 2, 3): two columns of `x`, scaled."""
    return x[:, 2 * k - 2 : 2 * k] * k + k


def three_points(banked=True):
    """Three observers on three tensors, one per estimator of ESTIMATORS,
    kept in the model's bank (or each in its own)."""
    inputs = keras.Input((6,))
    outputs = [
        Observer(estimator, name=f"o_{estimator}", banked=banked)(
            keras.layers.Lambda(lambda x, k=k: point_tensor(x, k))(inputs)
        )
        for k, estimator in enumerate(ESTIMATORS, start=1)
    ]
    return keras_quant.ObservedModel(inputs, outputs)


def state(observer):
    """Everything an observer has recorded, as numpy."""
    found = {
        name: read(getattr(observer, name))
        for name in ("min_", "max_", "batches_seen_", "nonfinite_batches_")
    }
    if observer.histogram_ is not None:
        found["histogram_"] = read(observer.histogram_)
    return found


def batches():
    """Three batches: the second has an Inf in point 1's columns and a NaN
    in point 2's, the third NaN in point 1's first column."""
    first = RNG.normal(size=(8, 6)).astype("float32")
    second = RNG.normal(2.0, 3.0, size=(8, 6)).astype("float32")
    second[1, 2], second[5, 0] = np.nan, np.inf
    third = RNG.normal(-1.0, 0.5, size=(8, 6)).astype("float32")
    third[:, 0] = np.nan
    return [first, second, third]


def test_a_step_updates_every_observer_as_it_would_alone():
    """The model's one batched update gives each point the state that
    feeding its tensor to a lone observer gives: min, max, counts, and the
    histogram."""
    model = three_points()
    alone = {
        o.name: Observer(o.estimator) for o in recording.find_observers(model)
    }
    for batch in batches():
        model.predict(batch, verbose=0)
        for k, estimator in enumerate(ESTIMATORS, start=1):
            alone[f"o_{estimator}"](
                keras.ops.convert_to_tensor(point_tensor(batch, k))
            )
    skipped = {"o_minmax": 2, "o_ema": 1, "o_percentile": 0}
    for observer in recording.find_observers(model):
        expected, found = state(alone[observer.name]), state(observer)
        assert expected.keys() == found.keys()
        for name in expected:
            np.testing.assert_allclose(found[name], expected[name], rtol=1e-6)
        assert found["nonfinite_batches_"] == skipped[observer.name]
        assert found["batches_seen_"] == 3 - skipped[observer.name]


def test_an_observed_model_keeps_the_scalars_in_two_variables():
    """The observers of `observe` keep no scalar variable of their own: the
    model's bank has one row per observer and a column per field, in one
    variable per dtype, and each observer reads its own row."""
    model = three_points()
    observers = recording.find_observers(model)
    bank = model.observer_state
    assert all(o.bank is bank for o in observers)
    assert {name: tuple(v.shape) for name, v in bank.variables.items()} == {
        "reals": (3, 3),
        "counts": (3, 3),
    }
    for observer in observers:
        assert [v.path for v in observer.variables] == [
            v.path for v in observer.own_variables()
        ]
    model.predict(RNG.normal(size=(8, 6)).astype("float32"), verbose=0)
    reals = keras.ops.convert_to_numpy(bank.variables["reals"].value)
    _, max_column = bank.cell["max_"]
    maxima = list(reals[:, max_column])
    assert [read(o.max_) for o in observers] == maxima
    assert len(set(maxima)) == 3


def test_saved_state_has_one_layout_with_or_without_a_bank(tmp_path):
    """Weights saved by banked observers load into observers that keep
    their own scalars (as files of earlier versions do), and back."""
    banked, lone = three_points(), three_points(banked=False)
    first, second, _ = batches()
    for source, target, batch in (
        (banked, lone, first),
        (lone, banked, second),
    ):
        source.predict(batch, verbose=0)
        path = tmp_path / f"{source.observers[0].banked}.weights.h5"
        source.save_weights(path)
        target.load_weights(path)
        for saved, loaded in zip(source.observers, target.observers):
            expected, found = state(saved), state(loaded)
            for name in expected:
                np.testing.assert_array_equal(found[name], expected[name])
    assert read(banked.observers[0].batches_seen_) == 1  # the NaN skipped
    assert read(banked.observers[2].batches_seen_) == 2


def test_the_run_time_mask_decides_inside_a_traced_step():
    """Observers traced to record (training too) skip a batch while their
    run-time mask is off, without retracing."""
    model = three_points()
    for observer in recording.find_observers(model):
        observer.set_record_mask(RECORD_ALWAYS)
    x = RNG.normal(size=(8, 6)).astype("float32")
    model.predict(x, verbose=0)
    with recording.observers_paused(model):
        model.predict(x * 100, verbose=0)
    for observer in recording.find_observers(model):
        assert read(observer.batches_seen_) == 1
        assert read(observer.max_) < 20


REDUCE = ("Min", "Max")


def traced_ops(model, training):
    """Op types of `model`'s call traced by TensorFlow, with counts."""
    graph = traced_graph(model, training)
    return collections.Counter(op.type for op in graph.get_operations())


def test_reductions_share_one_axes_constant_per_rank(calibrated_cnn):
    """Every point's min and max reduce over the axes of one constant per
    tensor rank, not one constant each."""
    graph = traced_graph(calibrated_cnn, False)
    reductions = [op for op in graph.get_operations() if op.type in REDUCE]
    axes = {op.inputs[1].op.name for op in reductions}
    ranks = {op.inputs[0].shape.rank for op in reductions}
    assert len(reductions) > 2 * len(ranks)
    assert len(axes) == len(ranks)


def test_a_phase_that_does_not_record_traces_no_observer_op(calibrated_cnn):
    """Observers recording on inference only add nothing to the training
    step's trace; recording, each point adds a handful of ops and the whole
    model one update per variable."""
    plain = traced_ops(graphs.float_graph(calibrated_cnn), True)
    training = traced_ops(calibrated_cnn, True)
    inference = traced_ops(calibrated_cnn, False)
    # Points whose range the spec fixes (softmax) record nothing.
    observers = [
        o
        for o in recording.find_observers(calibrated_cnn)
        if o.fixed_range is None
    ]
    points = len(observers)
    sampled = sum(o.sample_ is not None for o in observers)  # model inputs
    assert training["AssignVariableOp"] == plain["AssignVariableOp"]
    assert not {"Min", "Max", "If", "StatelessIf"} & (
        set(training) - set(plain)
    )
    # No conditional at all, the replay sample's included (model inputs).
    assert sampled == 1
    assert inference["If"] + inference["StatelessIf"] == 0
    # Two reductions per point: TensorFlow's min and max keep NaN.
    assert inference["Min"] == inference["Max"] == points
    assert inference["Sum"] == plain["Sum"]
    # The bank's two variables (reals, counts): one assignment each for
    # the whole model; the replay sample is handed to the host in one call.
    assert inference["AssignVariableOp"] == 2
    plain_inference = traced_ops(graphs.float_graph(calibrated_cnn), False)
    assert inference["ReadVariableOp"] - plain_inference["ReadVariableOp"] == 2
    assert inference["PyFunc"] == sampled


@pytest.mark.parametrize("phase", ["validation", "both"])
def test_fit_with_xla_collects_the_same_ranges(trained_cnn, digits, phase):
    """`jit_compile=True` (XLA) and the default give the same ranges."""
    found = {}
    for jit_compile in (False, True):
        model = keras.models.clone_model(trained_cnn)
        model.set_weights(trained_cnn.get_weights())
        observed = keras_quant.observe(model)
        observed.compile(
            optimizer=keras.optimizers.SGD(0.0),
            loss="sparse_categorical_crossentropy",
            jit_compile=jit_compile,
        )
        observed.fit(
            *digits["train"],
            epochs=1,
            batch_size=64,
            validation_data=digits["val"],
            callbacks=[keras_quant.callbacks.RangeCalibration(phase=phase)],
            verbose=0,
        )
        found[jit_compile] = [o.range() for o in observed.observers]
        steps = -(-len(digits["val"][0]) // 64)
        if phase == "both":
            steps += -(-len(digits["train"][0]) // 64)
        seen = {
            read(o.batches_seen_)
            for o in observed.observers
            if o.fixed_range is None
        }
        assert seen == {steps}
    np.testing.assert_allclose(found[True], found[False], rtol=1e-5, atol=1e-6)


def test_nan_and_inf_are_found_alike_with_and_without_xla():
    """Without XLA a point's min and max reveal NaN; with XLA, which may
    drop a NaN from them, a sum does: the same batches are skipped."""
    found, data = {}, batches()
    for jit_compile in (False, True):
        model = three_points()
        model.compile(jit_compile=jit_compile)
        for batch in data:
            model.predict(batch, verbose=0)
        found[jit_compile] = [state(o) for o in model.observers]
    for with_xla, without in zip(found[True], found[False]):
        for name in without:
            np.testing.assert_allclose(with_xla[name], without[name], rtol=1e-6)
    skipped = [o["nonfinite_batches_"] for o in found[True]]
    assert skipped == [2, 1, 0]


def test_nested_collections_apply_separately():
    """An inner collection (a nested observed model) applies its own
    points; the outer one is left with its own."""
    outer_observer, inner_observer = Observer(), Observer()
    with collection.collecting() as outer:
        outer_observer(keras.ops.ones((2, 2)))
        with collection.collecting() as inner:
            inner_observer(keras.ops.ones((2, 2)) * 3)
        inner.apply()
        assert inner_observer.range() == (0.0, 3.0)
        assert not outer_observer.calibrated
    outer.apply()
    assert outer_observer.range() == (0.0, 1.0)
    assert collection.active() is None
