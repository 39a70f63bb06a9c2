"""(f) int4: post-training against quantization-aware, and ai-edge-quantizer.

Three models on the demo's digits split (scikit-learn's bundled digits,
nothing downloaded): the demo CNN (`common.build_model`, 10 epochs), the
residual model of `qat_vs_tfmot.py` (sixteen residual Dense(12) blocks, no
BatchNormalization, 30 epochs) and a deep residual MLP (24 residual
Dense(32) blocks, no BatchNormalization, 30 epochs). Per seed, from one
trained float model:

- float: Keras test accuracy; size and latency of its float32 `.tflite`;
- float +N: the float model trained N more epochs (N = the QAT epochs) at
  QAT's learning rate, so that QAT's gain from extra training is not read
  as recovery;
- int8 PTQ: `export(observed, "int8")`, ranges from the validation split;
- int4 PTQ: `int8x4`, `dynamic_int4` per channel and in blocks,
  `int4_weights`, from the same observed model;
- int4 QAT: `quantize_aware(observed, mode=...)` from the float weights,
  fine-tuned N epochs with Adam at `--qat-learning-rate` (1e-4,
  a tenth of the float training's), exported in the
  same mode;
- AEQ: ai-edge-quantizer's own int4 recipes (`dynamic_wi4_afp32`, its
  blockwise twin, `weight_only_wi4_afp32`) applied to the float `.tflite`.

The block size is the smallest of `keras_quant.modes.BLOCK_SIZES` that
divides every Dense layer's input size; when none does (the residual
model's Dense(12) layers), the smallest is tried anyway and the table shows
the refusal.

Every `.tflite` runs in LiteRT on the 360 held-out test images; latency is
the median single-thread invocation on one image. Goal: post-training int4
loses at least 2 points, QAT int4 recovers at least half of that loss (mean
over the seeds), with files (PTQ and QAT) under 60 % of the int8 file.
Loss and recovery are judged twice: against float, and against the float
model trained as long as QAT ('float +N').

Run: `python benchmarks/int4.py --seeds 3` (about 20 minutes on 2 cores,
half of it the deep model; `--models deep` for that one alone); `--quick`
for a smoke run (one seed, short training).
"""

import argparse
import dataclasses
import os
import tempfile
import time

import common
import keras
import numpy as np
import qat_vs_tfmot

import keras_quant
from keras_quant.modes import BLOCK_SIZES
from keras_quant.runtime import litert

GOAL_LOSS = 0.02  # post-training int4 loses at least 2 points
GOAL_RECOVERY = 0.5  # QAT recovers at least half of that loss
GOAL_SIZE_RATIO = 0.6  # int4 files under 60 % of the int8 file
# Accuracies are multiples of 1/360: comparisons allow for float rounding.
TOLERANCE = 1e-9


@dataclasses.dataclass(frozen=True)
class BenchmarkModel:
    """A model the benchmark quantizes.

    Attributes:
        name: its `--models` name (and its `--<name>-epochs` option).
        summary: one line for the report.
        build: `seed -> compiled float keras.Model`.
        epochs: float training epochs.
        quick_epochs: float training epochs of a `--quick` run.
    """

    name: str
    summary: str
    build: object
    epochs: int
    quick_epochs: int


def build_cnn(seed):
    """The demo CNN (`common.build_model`), compiled, weights from `seed`."""
    return common.build_model(seed)


def build_residual(seed):
    """The residual model of `qat_vs_tfmot.py`, compiled, from `seed`."""
    return qat_vs_tfmot.keras3_model("residual", seed)


DEEP_WIDTH = 32  # units of every Dense layer of the deep model but the last
DEEP_BLOCKS = 24


def build_deep(seed):
    """A deep residual MLP, compiled like the residual model (Adam 1e-3,
    logits cross-entropy), weights from `seed`: Dense(32), 24 blocks of
    `x + Dense(32)(Dense(32, relu)(x))`, ReLU, Dense(10). No
    BatchNormalization; every Dense input is a multiple of 32, so blocks
    of 32 apply, and its weights outweigh the file's metadata."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = qat_vs_tfmot.residual(keras, DEEP_WIDTH, DEEP_BLOCKS)
    qat_vs_tfmot.compile_classifier(model, keras, 1e-3)
    return model


MODELS = {
    "cnn": BenchmarkModel(
        "cnn",
        "demo CNN: Conv2D 16 + BN, Conv2D 32, MaxPool, Dense 64, Dense 10",
        build_cnn,
        epochs=common.EPOCHS,
        quick_epochs=2,
    ),
    "residual": BenchmarkModel(
        "residual",
        "residual: 16 blocks of Dense(12), no BN (qat_vs_tfmot.py)",
        build_residual,
        epochs=30,
        quick_epochs=3,
    ),
    "deep": BenchmarkModel(
        "deep",
        "deep residual: 24 blocks of Dense(32), no BN",
        build_deep,
        epochs=30,
        quick_epochs=3,
    ),
}


@dataclasses.dataclass(frozen=True)
class Int4Variant:
    """One int4 export: a keras-quant mode and its block size."""

    mode: str
    block_size: int = None

    @property
    def label(self):
        """E.g. `'dynamic_int4 b32'`, or the mode alone per channel."""
        if self.block_size is None:
            return self.mode
        return f"{self.mode} b{self.block_size}"


@dataclasses.dataclass(frozen=True)
class Measurement:
    """A `.tflite` model measured on the test split (or a Keras model:
    then no size and no latency).

    Attributes:
        accuracy: test accuracy in [0, 1].
        size_bytes: file size, or None.
        latency_s: median single-thread latency on one image, or None.
    """

    accuracy: float
    size_bytes: int = None
    latency_s: float = None


@dataclasses.dataclass(frozen=True)
class Refusal:
    """An export or a QAT model that keras-quant or the quantizer refused."""

    message: str


def dense_input_sizes(model):
    """The input size of every Dense layer of `model`."""
    return [
        layer.kernel.shape[0]
        for layer in model.layers
        if isinstance(layer, keras.layers.Dense)
    ]


def block_size_for(inputs):
    """The smallest block size that divides every Dense input size in
    `inputs`, or the smallest offered when none does (so that its refusal
    is shown)."""
    for block_size in BLOCK_SIZES:
        if all(size % block_size == 0 for size in inputs):
            return block_size
    return BLOCK_SIZES[0]


def int4_variants(block_size):
    """The keras-quant int4 exports, in table order."""
    return [
        Int4Variant("int8x4"),
        Int4Variant("dynamic_int4"),
        Int4Variant("dynamic_int4", block_size),
        Int4Variant("int4_weights"),
    ]


def aeq_recipes(block_size):
    """`{label: recipe function}`: ai-edge-quantizer's own int4 recipes
    (per channel, in blocks when it has a recipe for `block_size`, and
    weight-only)."""
    from ai_edge_quantizer import recipe

    recipes = {"AEQ dynamic_wi4_afp32": recipe.dynamic_wi4_afp32}
    blockwise = f"dynamic_wi4b{block_size}_afp32"
    if hasattr(recipe, blockwise):
        recipes[f"AEQ {blockwise}"] = getattr(recipe, blockwise)
    recipes["AEQ weight_only_wi4_afp32"] = recipe.weight_only_wi4_afp32
    return recipes


def measure_file(path, data, latency_runs):
    """Test accuracy, size and single-thread latency of a `.tflite` file."""
    return Measurement(
        accuracy=qat_vs_tfmot.test_accuracy(path, data),
        size_bytes=os.path.getsize(path),
        latency_s=litert.latency(
            path, data.x_test[:1], runs=latency_runs, num_threads=1
        ),
    )


def attempt(write, data, latency_runs):
    """Runs `write()` (which returns a `.tflite` path) and measures the
    file; a refusal by keras-quant or ai-edge-quantizer becomes a `Refusal`
    carrying the first line of its message."""
    try:
        with common.quiet():
            path = write()
    except (keras_quant.ExportError, ValueError) as error:
        return Refusal(f"{type(error).__name__}: {error}".splitlines()[0])
    return measure_file(path, data, latency_runs)


def export_to(model, folder, name, mode, block_size=None):
    """`keras_quant.export` into `folder/name.tflite`; returns the path."""
    path = os.path.join(folder, f"{name}.tflite")
    return keras_quant.export(model, path, mode, block_size=block_size).path


def quantize_with_recipe(float_path, recipe, folder, name):
    """ai-edge-quantizer's `recipe` applied to the float `.tflite` at
    `float_path`; writes and returns `folder/name.tflite`."""
    from ai_edge_quantizer import quantizer

    with open(float_path, "rb") as file:
        float_tflite = file.read()
    quantized = quantizer.Quantizer(bytearray(float_tflite), recipe())
    tflite = quantized.quantize().quantized_model
    path = os.path.join(folder, f"{name}.tflite")
    with open(path, "wb") as file:
        file.write(bytes(tflite))
    return path


def post_training(observed, variants, data, folder, latency_runs):
    """float32, int8 and every int4 variant exported from the calibrated
    `observed` model: `{label: Measurement or Refusal}`."""
    results = {
        "float32 file": attempt(
            lambda: export_to(observed, folder, "float32", "float32"),
            data,
            latency_runs,
        ),
        "int8 PTQ": attempt(
            lambda: export_to(observed, folder, "int8", "int8"),
            data,
            latency_runs,
        ),
    }
    for variant in variants:
        results[f"{variant.label} PTQ"] = attempt(
            lambda: export_to(
                observed,
                folder,
                f"ptq_{variant.label.replace(' ', '_')}",
                variant.mode,
                variant.block_size,
            ),
            data,
            latency_runs,
        )
    return results


def ai_edge_quantizer_runs(float_path, block_size, data, folder, runs):
    """ai-edge-quantizer's int4 recipes on the float file: `{label:
    Measurement or Refusal}`."""
    return {
        label: attempt(
            lambda: quantize_with_recipe(
                float_path, recipe, folder, label.replace(" ", "_")
            ),
            data,
            runs,
        )
        for label, recipe in aeq_recipes(block_size).items()
    }


def quantization_aware(
    model, observed, weights, variant, seed, data, folder, args
):
    """QAT for `variant` from the float `weights` (restored first: the QAT
    model trains `model`'s layers), then its export: a `Measurement` or a
    `Refusal`."""
    model.set_weights(weights)

    def train_and_export():
        qat = keras_quant.quantize_aware(
            observed, mode=variant.mode, block_size=variant.block_size
        )
        qat_vs_tfmot.compile_classifier(qat, keras, args.qat_learning_rate)
        keras.utils.set_random_seed(seed)
        qat_vs_tfmot.train(qat, data, args.qat_epochs, args.batch_size)
        name = f"qat_{variant.label.replace(' ', '_')}"
        return export_to(qat, folder, name, variant.mode, variant.block_size)

    return attempt(train_and_export, data, args.latency_runs)


def float_trained_longer(benchmark_model, weights, seed, data, args):
    """A fresh float model from `weights`, trained as many more epochs as
    QAT trains, with the same seed: the fair baseline for QAT."""
    model = benchmark_model.build(seed)
    model.set_weights(weights)
    qat_vs_tfmot.compile_classifier(model, keras, args.qat_learning_rate)
    keras.utils.set_random_seed(seed)
    qat_vs_tfmot.train(model, data, args.qat_epochs, args.batch_size)
    return Measurement(float(model.evaluate(*data.test, verbose=0)[1]))


def measure_seed(benchmark_model, seed, data, args):
    """Every figure of one model and one seed: `{label: Measurement or
    Refusal}`, and the model's Dense input sizes."""
    model = benchmark_model.build(seed)
    qat_vs_tfmot.train(
        model, data, args.epochs[benchmark_model.name], args.batch_size
    )
    weights = model.get_weights()
    inputs = dense_input_sizes(model)
    block_size = block_size_for(inputs)
    variants = int4_variants(block_size)
    results = {
        "float": Measurement(float(model.evaluate(*data.test, verbose=0)[1]))
    }
    observed = keras_quant.observe(model)
    observed.evaluate(*data.validation, verbose=0)
    with tempfile.TemporaryDirectory() as folder:
        results.update(
            post_training(observed, variants, data, folder, args.latency_runs)
        )
        float_file = results.pop("float32 file")
        results["float"] = dataclasses.replace(
            results["float"],
            size_bytes=float_file.size_bytes,
            latency_s=float_file.latency_s,
        )
        for variant in variants:
            results[f"{variant.label} QAT"] = quantization_aware(
                model, observed, weights, variant, seed, data, folder, args
            )
        results.update(
            ai_edge_quantizer_runs(
                os.path.join(folder, "float32.tflite"),
                block_size,
                data,
                folder,
                args.latency_runs,
            )
        )
    # Last: building a model clears the Keras session.
    results[f"float +{args.qat_epochs}"] = float_trained_longer(
        benchmark_model, weights, seed, data, args
    )
    return results, inputs


def table_order(per_seed, variants, qat_epochs):
    """Row labels: float, float +N, int8, each int4 variant's PTQ and QAT,
    then ai-edge-quantizer's recipes."""
    int4 = [f"{v.label} {kind}" for v in variants for kind in ("PTQ", "QAT")]
    aeq = [label for label in per_seed[0] if label.startswith("AEQ ")]
    return ["float", f"float +{qat_epochs}", "int8 PTQ", *int4, *aeq]


def measurements(per_seed, label):
    """The `Measurement`s of `label` over the seeds, or None if any seed
    refused it."""
    found = [results[label] for results in per_seed.values()]
    if any(isinstance(result, Refusal) for result in found):
        return None
    return found


def mean_of(values):
    """Mean of the numbers among `values` (None when there are none)."""
    numbers = [v for v in values if v is not None]
    return float(np.mean(numbers)) if numbers else None


def signed_points(fraction):
    """`fraction` in signed points, e.g. `'+8.52'`; never `'-0.00'`."""
    return f"{round(100 * fraction, 2) + 0.0:+.2f}"


def summary_row(label, found, float_accuracy, int8_size):
    """One row of the summary table for `label`'s measurements."""
    if found is None:
        return [label, "refused", "", "", "", "", ""]
    accuracies = [100 * m.accuracy for m in found]
    size = mean_of(m.size_bytes for m in found)
    latency = mean_of(m.latency_s for m in found)
    return [
        label,
        f"{np.mean(accuracies):.2f}",
        f"{min(accuracies):.2f}-{max(accuracies):.2f}",
        signed_points(float_accuracy - np.mean(accuracies) / 100),
        "-" if size is None else f"{size:,.0f}",
        "-" if size is None else f"{100 * size / int8_size:.0f} %",
        "-" if latency is None else f"{1e6 * latency:.1f}",
    ]


def print_summary(per_seed, labels):
    """Mean over the seeds, spread, drop from float, size, latency."""
    float_accuracy = mean_of(
        m.accuracy for m in measurements(per_seed, "float")
    )
    int8_size = mean_of(
        m.size_bytes for m in measurements(per_seed, "int8 PTQ")
    )
    rows = [
        summary_row(
            label, measurements(per_seed, label), float_accuracy, int8_size
        )
        for label in labels
    ]
    common.print_table(
        [
            "",
            "accuracy %",
            "min-max",
            "drop",
            "size B",
            "vs int8",
            "latency us",
        ],
        rows,
    )


def print_per_seed(per_seed, labels):
    """Test accuracy of every row for every seed."""
    seeds = list(per_seed)
    rows = []
    for label in labels:
        cells = []
        for seed in seeds:
            result = per_seed[seed][label]
            cells.append(
                "refused"
                if isinstance(result, Refusal)
                else f"{100 * result.accuracy:.2f}"
            )
        rows.append([label, *cells])
    common.print_table(["", *[f"seed {seed}" for seed in seeds]], rows)


def print_refusals(per_seed):
    """Each distinct refusal message once, with its row."""
    seen = set()
    for results in per_seed.values():
        for label, result in results.items():
            if (
                isinstance(result, Refusal)
                and (label, result.message) not in seen
            ):
                seen.add((label, result.message))
                print(f"refused, {label}: {result.message}")


@dataclasses.dataclass(frozen=True)
class Recovery:
    """One int4 variant's loss and recovery against one reference (means
    over the seeds).

    Attributes:
        reference: the reference's label: `'float'` or `'float +N'`.
        loss: the reference's accuracy minus post-training int4's.
        recovery: (QAT - PTQ) / loss, or None when nothing is lost.
        qat_gap: QAT accuracy minus the reference's.
    """

    reference: str
    loss: float
    recovery: float
    qat_gap: float

    @property
    def met(self):
        """Whether PTQ loses enough and QAT recovers enough of it."""
        return (
            self.loss >= GOAL_LOSS - TOLERANCE
            and self.recovery is not None
            and self.recovery >= GOAL_RECOVERY - TOLERANCE
        )


def recovery_against(reference, reference_accuracy, ptq, qat):
    """The `Recovery` of PTQ and QAT accuracies `ptq`, `qat` against the
    `reference` model's accuracy."""
    loss = reference_accuracy - ptq
    return Recovery(
        reference=reference,
        loss=loss,
        recovery=(qat - ptq) / loss if loss > TOLERANCE else None,
        qat_gap=qat - reference_accuracy,
    )


@dataclasses.dataclass(frozen=True)
class GoalCheck:
    """The goal's figures for one int4 variant (means over seeds).

    Attributes:
        label: the variant's label.
        against_float: its `Recovery` against float.
        against_longer: its `Recovery` against the float model trained as
            long as QAT ('float +N').
        ptq_size_ratio: the PTQ int4 file's size over the int8 file's.
        qat_size_ratio: the QAT int4 file's size over the int8 file's.
    """

    label: str
    against_float: Recovery
    against_longer: Recovery
    ptq_size_ratio: float
    qat_size_ratio: float

    @property
    def small_enough(self):
        """Whether both int4 files are under the goal's share of int8."""
        return max(self.ptq_size_ratio, self.qat_size_ratio) < GOAL_SIZE_RATIO

    @property
    def met(self):
        """Whether the goal holds against float: loss, recovery, size."""
        return self.small_enough and self.against_float.met

    @property
    def met_against_longer(self):
        """Whether the goal holds against 'float +N' instead of float."""
        return self.small_enough and self.against_longer.met


def mean_accuracy(per_seed, label):
    """Mean test accuracy of `label` over the seeds (None if refused)."""
    found = measurements(per_seed, label)
    return None if found is None else mean_of(m.accuracy for m in found)


def mean_size(found):
    """Mean file size of the `Measurement`s `found`."""
    return mean_of(m.size_bytes for m in found)


def goal_check(per_seed, variant_label, qat_epochs):
    """The `GoalCheck` of one int4 variant, or None if it was refused."""
    ptq = measurements(per_seed, f"{variant_label} PTQ")
    qat = measurements(per_seed, f"{variant_label} QAT")
    if ptq is None or qat is None:
        return None
    ptq_accuracy = mean_of(m.accuracy for m in ptq)
    qat_accuracy = mean_of(m.accuracy for m in qat)
    longer = f"float +{qat_epochs}"
    int8_size = mean_size(measurements(per_seed, "int8 PTQ"))
    return GoalCheck(
        label=variant_label,
        against_float=recovery_against(
            "float",
            mean_accuracy(per_seed, "float"),
            ptq_accuracy,
            qat_accuracy,
        ),
        against_longer=recovery_against(
            longer, mean_accuracy(per_seed, longer), ptq_accuracy, qat_accuracy
        ),
        ptq_size_ratio=mean_size(ptq) / int8_size,
        qat_size_ratio=mean_size(qat) / int8_size,
    )


def recovery_text(recovery):
    """E.g. `'vs float: PTQ loses +6.20 points, QAT recovers 80 %, QAT -
    float -1.20'`."""
    recovered = (
        "nothing to recover"
        if recovery.recovery is None
        else f"QAT recovers {100 * recovery.recovery:.0f} %"
    )
    return (
        f"vs {recovery.reference}: PTQ loses "
        f"{signed_points(recovery.loss)} points, {recovered}, QAT - "
        f"{recovery.reference} {signed_points(recovery.qat_gap)}"
    )


def goal_lines(check):
    """The figures and verdicts of a `GoalCheck`: its file sizes, then one
    line against float and one against 'float +N' (each verdict covers
    the size too)."""
    return [
        f"{check.label}: files {100 * check.ptq_size_ratio:.0f} % (PTQ), "
        f"{100 * check.qat_size_ratio:.0f} % (QAT) of int8",
        f"  {recovery_text(check.against_float)}: "
        f"{common.goal_text(check.met)}",
        f"  {recovery_text(check.against_longer)}: "
        f"{common.goal_text(check.met_against_longer)}",
    ]


def report_model(benchmark_model, per_seed, inputs, args):
    """Prints one model's tables and goal lines; returns its `GoalCheck`s."""
    block_size = block_size_for(inputs)
    print(
        f"--- {benchmark_model.summary}; "
        f"{args.epochs[benchmark_model.name]} float epochs, "
        f"{args.qat_epochs} QAT epochs; Dense input sizes "
        f"{sorted(set(inputs))}, block size {block_size}"
    )
    variants = int4_variants(block_size)
    labels = table_order(per_seed, variants, args.qat_epochs)
    print()
    print_summary(per_seed, labels)
    print()
    print_per_seed(per_seed, labels)
    print()
    print_refusals(per_seed)
    checks = [
        goal_check(per_seed, variant.label, args.qat_epochs)
        for variant in variants
    ]
    for variant, check in zip(variants, checks):
        if check is None:
            print(f"{variant.label}: refused")
        else:
            print("\n".join(goal_lines(check)))
    print()
    return [check for check in checks if check is not None]


def print_legend(args):
    """What the columns mean."""
    print(
        "test accuracy in % (360 images, LiteRT for every .tflite), mean "
        f"over {args.seeds} seed(s) and min-max; drop = float minus the row, "
        "in points; size of the .tflite file and its ratio to the int8 "
        "file; latency: median single-thread invocation on one image "
        f"({args.latency_runs} runs), mean over the seeds. 'float "
        f"+{args.qat_epochs}' trains the float model as long as QAT. AEQ: "
        "ai-edge-quantizer's recipe on the float .tflite."
    )
    print()


def parse_args(argv=None):
    """The command line; `--quick` sets a one-seed, short-training run."""
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=3,
        help="number of seeds (0, 1, ..., SEEDS-1)",
    )
    parser.add_argument(
        "--models",
        default="cnn,residual,deep",
        help="comma-separated, of: " + ", ".join(MODELS),
    )
    for model in MODELS.values():
        parser.add_argument(
            f"--{model.name}-epochs",
            type=int,
            default=model.epochs,
            help=f"float training epochs of the {model.name} model",
        )
    parser.add_argument(
        "--qat-epochs",
        type=int,
        default=qat_vs_tfmot.QAT_EPOCHS,
        help="QAT epochs (and extra float epochs)",
    )
    parser.add_argument(
        "--qat-learning-rate",
        type=float,
        default=1e-4,
        help="Adam learning rate of QAT fine-tuning (and of the extra float "
        "epochs): a tenth of the float training's, as fine-tuning usually "
        "is",
    )
    parser.add_argument("--batch-size", type=int, default=common.BATCH_SIZE)
    parser.add_argument(
        "--latency-runs",
        type=int,
        default=200,
        help="timed invocations per file",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 seed, 2+3+3 float epochs, 1 QAT "
        "epoch, 20 latency runs",
    )
    args = parser.parse_args(argv)
    if args.quick:
        for model in MODELS.values():
            setattr(args, f"{model.name}_epochs", model.quick_epochs)
        args.seeds, args.qat_epochs, args.latency_runs = 1, 1, 20
    del args.quick  # the reproduce line spells out what it set
    unknown = set(args.models.split(",")) - set(MODELS)
    if unknown:
        parser.error(
            f"unknown models {sorted(unknown)}; choose from {list(MODELS)}"
        )
    return args


def met_by(checks, met):
    """`'met by deep dynamic_int4 b32, ...'` or `'NOT met'`: the variants
    of `checks` (`{model name: [GoalCheck]}`) for which `met(check)`."""
    found = [
        f"{name} {check.label}"
        for name, model_checks in checks.items()
        for check in model_checks
        if met(check)
    ]
    return "met by " + ", ".join(found) if found else "NOT met"


def main(argv=None):
    args = parse_args(argv)
    common.print_header(
        "(f) int4: post-training vs QAT, and ai-edge-quantizer's recipes",
        "benchmarks/int4.py",
        args,
    )
    args.epochs = {name: getattr(args, f"{name}_epochs") for name in MODELS}
    print_legend(args)
    data = common.load_digits()
    checks = {}
    for name in args.models.split(","):
        start = time.perf_counter()
        per_seed = {}
        for seed in range(args.seeds):
            per_seed[seed], inputs = measure_seed(
                MODELS[name], seed, data, args
            )
        checks[name] = report_model(MODELS[name], per_seed, inputs, args)
        print(f"({name}: {time.perf_counter() - start:.0f} s)")
        print()
    print(
        "goal (PTQ int4 loses >= 2 points, QAT recovers >= half of it, PTQ "
        "and QAT files < 60 % of int8):"
    )
    print(f"  vs float: {met_by(checks, lambda check: check.met)}")
    print(
        f"  vs float +{args.qat_epochs}: "
        f"{met_by(checks, lambda check: check.met_against_longer)}"
    )
    return checks


if __name__ == "__main__":
    main()
