"""`mode="auto"`: the TFLite guide's decision tree, walked with measurements.

`TARGETS` lists, per deployment target, the steps to try, smallest and
fastest first. Each step converts the model, measures its size, its
single-thread latency and its accuracy on the validation data in LiteRT,
and the first one within the accuracy budget is written. Two steps are not
modes but mixes, tried one more layer at a time in the order of what
keeping each layer alone apart gains (`keras_quant.analyze`):

- `KEEP_FLOAT`: `int8` with layers kept in float, skipping a layer that
  would make the model no smaller than float16;
- `KEEP_8BIT`: `int8x4` with layers whose weights stay int8, skipping a
  layer that would make the model no smaller than `int8`.

| target         | steps                                                   |
|----------------|---------------------------------------------------------|
| `cpu`          | int8, int8+float layers, dynamic, int16x8, float16, fp32 |
| `gpu`          | float16, float32                                        |
| `integer_only` | int8_only                                               |
| `size`         | int8x4, dynamic_int4, int8x4+8-bit layers, then as `cpu`  |
|                | without int16x8                                         |
"""

import dataclasses

import numpy as np

from keras_quant import data as data_lib
from keras_quant import text
from keras_quant._compat import keras_internals
from keras_quant.conversion import checks
from keras_quant.conversion import routes as conversion
from keras_quant.errors import ExportError
from keras_quant.errors import KerasQuantError
from keras_quant.exporting import files
from keras_quant.exporting.result import ExportResult
from keras_quant.exporting.result import layer_options_label
from keras_quant.exporting.single import float32_size_of
from keras_quant.measurement import evaluation
from keras_quant.measurement import micro_check
from keras_quant.measurement import sensitivity
from keras_quant.modes import KEEP_8BIT
from keras_quant.modes import KEEP_FLOAT
from keras_quant.modes import MODES
from keras_quant.modes import TARGETS
from keras_quant.modes import Mode
from keras_quant.options import ConvertOptions
from keras_quant.runtime import litert

# Metric names Keras maximizes when their metric object does not say.
_HIGHER_IS_BETTER = ("acc", "auc", "precision", "recall", "f1", "iou")


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much worse than float a quantized model may be.

    Attributes:
        metric: the compiled metric judged (`"loss"` when there is none).
        higher_is_better: whether the metric grows as the model improves.
        float_value: the float Keras model's value on the validation data.
        max_drop: the allowed drop: points (hundredths) of a metric that
            grows, percent of the float value for one that shrinks.
    """

    metric: str
    higher_is_better: bool
    float_value: float
    max_drop: float

    def drop(self, value):
        """How much worse `value` is than float, in the budget's unit."""
        if self.higher_is_better:
            return 100.0 * (self.float_value - value)
        return 100.0 * (value - self.float_value) / abs(self.float_value)

    @property
    def unit(self):
        return "points" if self.higher_is_better else "%"

    def describe(self):
        unit = self.unit
        if unit == "points" and self.max_drop == 1:
            unit = "point"
        return (
            f"{self.metric} at most {self.max_drop:g} {unit} worse than "
            f"float ({self.float_value:.4f})"
        )


@dataclasses.dataclass(frozen=True)
class Trial:
    """One measured candidate.

    Attributes:
        mode: the `Mode` converted.
        keep_float: layers kept in float (`int8` only).
        keep_8bit: layers whose weights stay int8 (`int8x4` only).
        size_bytes: size of the `.tflite` model, or None if it failed.
        metric: the budget's metric in LiteRT, or None.
        drop: `Budget.drop(metric)`, or None.
        latency_us: median single-thread latency of one sample, in µs.
        within_budget: whether `drop <= max_drop`.
        note: why it failed, or None.
    """

    mode: Mode
    keep_float: tuple = ()
    size_bytes: int = None
    metric: float = None
    drop: float = None
    latency_us: float = None
    within_budget: bool = False
    note: str = None
    keep_8bit: tuple = ()

    @property
    def label(self):
        return layer_options_label(self.mode, self.keep_float, self.keep_8bit)

    @property
    def kept(self):
        """The layers kept apart: `(option name, layers)`."""
        if self.keep_8bit:
            return "keep_8bit", self.keep_8bit
        return "keep_float", self.keep_float

    def to_dict(self):
        return {**dataclasses.asdict(self), "mode": self.mode.value}


@dataclasses.dataclass(frozen=True)
class Selection:
    """What `mode="auto"` tried and why it chose what it chose.

    Attributes:
        target: the deployment target.
        budget: the `Budget`.
        trials: every `Trial`, in the order tried.
        chosen: the `Trial` written.
        reason: one paragraph explaining the choice.
    """

    target: str
    budget: Budget
    trials: tuple
    chosen: Trial
    reason: str

    def table(self):
        """The trials as a text table."""
        rows = [("candidate", "size KB", self.budget.metric, "drop", "µs")]
        for t in self.trials:
            rows.append(
                (
                    t.label,
                    _format(t.size_bytes and t.size_bytes / 1024, ".1f"),
                    _format(t.metric, ".4f"),
                    _format(t.drop, "+.2f"),
                    _format(t.latency_us, ".1f"),
                )
            )
        return text.table(rows)

    def kept_layer_costs(self):
        """What each layer the chosen model keeps apart (float, or 8-bit
        weights) costs, measured.

        Returns:
            `[(layer, added bytes, added µs)]`: each difference is between
            the trial that added the layer and the one before it (the plain
            mode for the first). A layer whose trial before it failed (the
            plain mode, when int8 cannot hold one of its multipliers) has
            no cost to show and is left out.
        """
        option, kept = self.chosen.kept
        by_layers = {
            t.kept[1]: t
            for t in self.trials
            if t.mode is self.chosen.mode and not t.note
        }
        costs = []
        for count, layer in enumerate(kept, start=1):
            after = by_layers[kept[:count]]
            before = by_layers.get(kept[: count - 1])
            if before is None:
                continue
            costs.append(
                (
                    layer,
                    after.size_bytes - before.size_bytes,
                    after.latency_us - before.latency_us,
                )
            )
        return costs

    def to_dict(self):
        return {
            "target": self.target,
            "budget": dataclasses.asdict(self.budget),
            "trials": [t.to_dict() for t in self.trials],
            "chosen": self.chosen.to_dict(),
            "kept_layer_costs": [
                {"layer": layer, "bytes": size, "latency_us": latency}
                for layer, size, latency in self.kept_layer_costs()
            ],
            "reason": self.reason,
        }


def _format(value, spec):
    return "-" if value is None else format(value, spec)


@dataclasses.dataclass
class _Search:
    """What every step needs: the model, the data and the float baseline."""

    model: object
    x: object
    y: object
    budget: Budget
    choice: object  # the plan's `Choice`
    batch_size: int
    float32_size: int
    sizes: dict = dataclasses.field(default_factory=dict)
    converted: dict = dataclasses.field(default_factory=dict)

    def size_of(self, mode):
        """The model's size in `mode`, converted once."""
        if mode not in self.sizes:
            self.sizes[mode] = len(conversion.convert(self.model, mode))
        return self.sizes[mode]

    def options(self, mode, keep_float=(), keep_8bit=()):
        """The `ConvertOptions` of a candidate."""
        integer_io = MODES[mode].integer_io
        return ConvertOptions(
            mode,
            io_dtype=self.choice.io_dtype if integer_io else None,
            keep_float=keep_float,
            keep_8bit=keep_8bit,
            target=self.choice.deployment_target,
        )

    def measure(self, mode, keep_float=(), keep_8bit=()):
        """Converts and measures one candidate; never raises for the
        model's own failures (they become the trial's note)."""
        try:
            conversion.ranges_for(self.model, mode)
            tflite = conversion.convert(
                self.model, self.options(mode, keep_float, keep_8bit)
            )
        except KerasQuantError as error:
            return Trial(mode, keep_float, note=str(error), keep_8bit=keep_8bit)
        predictions = litert.run(tflite, self.x, batch_size=self.batch_size)
        value = evaluation.metrics_from_predictions(
            self.model, self.y, predictions
        )[self.budget.metric]
        drop = self.budget.drop(value)
        sample = [np.asarray(a)[:1] for a in data_lib.as_list(self.x)]
        trial = Trial(
            mode,
            tuple(keep_float),
            size_bytes=len(tflite),
            metric=value,
            drop=drop,
            latency_us=1e6 * litert.latency(tflite, sample, runs=100),
            within_budget=drop <= self.budget.max_drop,
            keep_8bit=tuple(keep_8bit),
        )
        self.converted[_key(trial)] = (tflite, predictions)
        return trial


def _key(trial):
    return (trial.mode, trial.keep_float, trial.keep_8bit)


@dataclasses.dataclass(frozen=True)
class _Mix:
    """A step of layers kept apart from a mode, one more at a time.

    Attributes:
        mode: the mode the others take.
        option: the `convert` option naming the kept layers.
        limit: the mode a mix must stay smaller than (else the layer is
            skipped: that mode, a later step, keeps every layer so).
    """

    mode: Mode
    option: str
    limit: Mode

    def forced(self, model):
        """The layers every mix keeps apart: for `keep_float`, those whose
        constant multipliers int8 cannot hold (`checks.guarded_layers`),
        which would fail every candidate otherwise."""
        if self.option != "keep_float":
            return []
        return checks.guarded_layers(model)


MIXES = {
    KEEP_FLOAT: _Mix(Mode.INT8, "keep_float", Mode.FLOAT16),
    KEEP_8BIT: _Mix(Mode.INT8X4, "keep_8bit", Mode.INT8),
}


def _run_step(search, step):
    """The trials of one step of a target's list."""
    if step in MIXES:
        return _try_mix(search, MIXES[step])
    return [search.measure(step)]


def _try_mix(search, mix):
    """`mix.mode` with layers kept apart, one more at a time, in the order
    of what each gains alone, until the budget is met. A layer that would
    make the model no smaller than `mix.limit` is skipped, and the mix that
    would keep every layer apart is not tried."""
    forced = mix.forced(search.model)
    try:
        analysis = sensitivity.analyze(
            search.model,
            search.x,
            batch_size=search.batch_size,
            mode=mix.mode,
            kept=forced,
        )
    except KerasQuantError as error:
        return [Trial(mix.mode, note=str(error))]
    limit = search.size_of(mix.limit)
    # Every measured layer kept apart is `mix.limit` or worse: not tried.
    measured = {gain.layer for gain in analysis.layers}
    trials, kept = [], list(forced)
    steps = [()] if forced else []  # the forced layers alone come first
    steps += [(layer,) for layer in analysis.layers_to_keep()]
    for step in steps:
        if step and measured <= {*kept, *step}:
            break
        layer = step[0] if step else None
        trial = search.measure(mix.mode, **{mix.option: [*kept, *step]})
        if trial.size_bytes is not None and trial.size_bytes >= limit:
            trial = dataclasses.replace(
                trial,
                within_budget=False,
                note=f"{trial.size_bytes / 1024:.1f} KB, no smaller than "
                f"{mix.limit.value} ({limit / 1024:.1f} KB)",
            )
        elif layer is not None:
            kept.append(layer)
        trials.append(trial)
        if trial.within_budget:
            break
    return trials


def export_auto(model, destination, plan, shared):
    """Chooses the mode for the plan's target and writes it; see
    `keras_quant.export`.

    Args:
        model: the model to export.
        destination: the plan's `Destination` whose mode is `"auto"`.
        plan: the `ExportPlan`, whose `choice` holds the budget and target
            and whose `validation_data` the candidates are measured on.
        shared: the run's shared dict (float32 size, float predictions).

    Returns:
        An `ExportResult` whose `selection` is a `Selection`.

    Raises:
        ExportError: no candidate met the budget (nothing is written).
    """
    x, y = data_lib.as_arrays(plan.validation_data)
    if "float_predictions" not in shared:
        shared["float_predictions"] = evaluation.predict_float(
            model, x, plan.batch_size
        )
    float_predictions = shared["float_predictions"]
    float_metrics = evaluation.metrics_from_predictions(
        model, y, float_predictions
    )
    budget = budget_for(model, float_metrics, plan.choice.max_accuracy_drop)
    search = _Search(
        model,
        x,
        y,
        budget,
        plan.choice,
        plan.batch_size,
        float32_size_of(model, None, None, shared),
    )
    trials = []
    for step in TARGETS[plan.choice.target]:
        trials.extend(_run_step(search, step))
        if trials[-1].within_budget:
            break
    selection = _explain(plan.choice.target, budget, tuple(trials))
    chosen = selection.chosen
    tflite, predictions = search.converted[_key(chosen)]
    options = search.options(chosen.mode, chosen.keep_float, chosen.keep_8bit)
    micro = None
    if options.target is not None:
        micro = micro_check.verify(model, tflite, plan.validation_data)
    files.write_atomically(destination.path, tflite)
    return ExportResult(
        path=destination.path,
        mode=chosen.mode,
        io_dtype=options.io_dtype,
        size_bytes=chosen.size_bytes,
        float32_size_bytes=search.float32_size,
        size_ratio=chosen.size_bytes / search.float32_size,
        ranges=conversion.ranges_for(model, chosen.mode),
        float_metrics=float_metrics,
        quantized_metrics=evaluation.metrics_from_predictions(
            model, y, predictions
        ),
        max_abs_output_diff=evaluation.max_abs_difference(
            float_predictions, predictions
        ),
        keep_float=chosen.keep_float,
        keep_8bit=chosen.keep_8bit,
        selection=selection,
        target=options.target,
        micro=micro,
    )


def budget_for(model, float_metrics, max_drop):
    """The `Budget` for `model`: its first compiled metric, else its loss."""
    names = [name for name in float_metrics if name != "loss"]
    metric = names[0] if names else "loss"
    return Budget(
        metric=metric,
        higher_is_better=higher_is_better(model, metric),
        float_value=float_metrics[metric],
        max_drop=float(max_drop),
    )


def higher_is_better(model, metric):
    """Whether `metric` grows as the model improves, as Keras decides it
    for `EarlyStopping(mode="auto")`: the metric's `_direction`, else its
    name."""
    if metric == "loss":
        return False
    for candidate in getattr(model, "metrics", []):
        for inner in getattr(candidate, "metrics", [candidate]):
            direction = keras_internals.metric_direction(inner)
            if inner.name == metric and direction is not None:
                return direction == "up"
    return any(word in metric for word in _HIGHER_IS_BETTER)


def _explain(target, budget, trials):
    within = [t for t in trials if t.within_budget]
    if not within:
        listed = "; ".join(
            f"{t.label}: " + (t.note or f"{t.drop:+.2f} {budget.unit}")
            for t in trials
        )
        raise ExportError(
            f"No candidate for target {target!r} kept {budget.describe()}. "
            f"Tried: {listed}. Train with `keras_quant.quantize_aware`, "
            "raise `max_accuracy_drop`, or choose another target."
        )
    chosen = within[0]
    failed = [t for t in trials if t is not chosen]
    history = "; ".join(_outcome(t, budget) for t in failed)
    reason = (
        f"Target {target!r} tries {_order(target)} in that order and takes "
        f"the first within the budget ({budget.describe()}). "
        + (f"{history}. " if history else "")
        + f"{chosen.label} is within it ({chosen.drop:+.2f} {budget.unit}): "
        f"{chosen.size_bytes / 1024:.1f} KB, {chosen.latency_us:.1f} µs."
    )
    selection = Selection(target, budget, trials, chosen, reason)
    costs = selection.kept_layer_costs()
    if not costs:
        return selection
    listed = ", ".join(
        f"{layer} {size / 1024:+.1f} KB {latency:+.1f} µs"
        for layer, size, latency in costs
    )
    kind = "Float" if chosen.keep_float else "8-bit"
    return dataclasses.replace(
        selection, reason=f"{reason} {kind} layers cost: {listed}."
    )


def _outcome(trial, budget):
    if trial.note and trial.drop is None:
        return f"{trial.label} failed ({trial.note.split('. ')[0]})"
    if trial.note:
        return f"{trial.label} was skipped ({trial.note})"
    return f"{trial.label} missed it ({trial.drop:+.2f} {budget.unit})"


def _order(target):
    return ", ".join(
        step if step in MIXES else step.value for step in TARGETS[target]
    )
