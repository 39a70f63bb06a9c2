"""(e) Accuracy guard: `mode="auto"` with layers kept float, and estimators.

Two real tasks on scikit-learn's digits:

- the demo's CNN classifier (test accuracy);
- a denoiser: a residual CNN that removes Gaussian noise (sigma 0.2) from
  the digits, judged on its mean absolute error (MAE) against the clean
  images. A regression output shows every quantization error, where a
  classifier hides those that flip no argmax.

Part 1, `mode="auto"` on the denoiser with a budget of 0.1 % MAE
(`max_accuracy_drop=0.1`), and on the classifier under random exposure
(below) with a budget of 0.5 points, judged on the validation split: every
candidate it tried, with its measured size, metric and latency; the
float16 size for comparison; the test score of the model it wrote.

Part 2, range estimators: for each of minmax, percentile, mse, entropy and
auto, test accuracy of the int8 classifier and test MAE of the int8
denoiser, plus the mean SQNR over quantization points (`analyze`). The
classifier is also run on digits under random exposure (each image times a
log-normal gain, sigma 1: long-tailed activations) in train, validation
and test.

Part 3, raw tabular features with Keras's `Normalization` layer inside the
model, on scikit-learn's breast cancer and wine data (shipped with
scikit-learn): a stratified 70/30 split per seed, the MLP `Normalization
-> Dense 64 -> Dense 32 -> softmax` trained 30 epochs, ranges from one
validation run, then `mode="auto"` with a one-point budget on the
validation split. One row per data set: the mode and float layers chosen
on each seed; float and quantized accuracy, drop and size against float32,
mean over seeds; and the goal (int8 with `norm` float, drop <= 1 point,
size ratio < 0.9), met on how many seeds.

Run: `python benchmarks/accuracy_guard.py --seeds 3`; `--parts 3` runs
Part 3 alone (about 2 minutes on 2 cores).
"""

import argparse
import dataclasses
import os
import tempfile

import common
import keras
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.datasets import load_wine
from sklearn.model_selection import train_test_split

import keras_quant

ESTIMATORS = ("minmax", "percentile", "mse", "entropy", "auto")
NOISE = 0.2
DENOISER_EPOCHS = 40
BUDGET = 0.1
CLASSIFIER_BUDGET = 0.5
PARTS = (1, 2, 3)
TABULAR = {"breast cancer": load_breast_cancer, "wine": load_wine}
TABULAR_EPOCHS = 30
TABULAR_BUDGET = 1
TABULAR_SIZE_RATIO = 0.9


def noisy_digits(data, seed=0):
    """`{split: (noisy, clean)}`: Gaussian noise, clipped at 0."""
    rng = np.random.default_rng(seed)

    def noisy(x):
        return np.clip(x + rng.normal(0, NOISE, x.shape), 0, None).astype(
            "float32"
        )

    return {
        "train": (noisy(data.x_train), data.x_train),
        "val": (noisy(data.x_val), data.x_val),
        "test": (noisy(data.x_test), data.x_test),
    }


def exposed_digits(data, seed=0):
    """`{split: (images times a log-normal gain, labels)}`."""
    rng = np.random.default_rng(seed)

    def exposed(x):
        gain = rng.lognormal(0.0, 1.0, (len(x), 1, 1, 1))
        return (x * gain).astype("float32")

    return {
        "train": (exposed(data.x_train), data.y_train),
        "val": (exposed(data.x_val), data.y_val),
        "test": (exposed(data.x_test), data.y_test),
    }


def denoiser(seed):
    """Three 3x3 convolutions estimate the noise; the output subtracts it."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1), name="noisy")
    x = inputs
    for i in range(3):
        x = keras.layers.Conv2D(
            32, 3, padding="same", activation="relu", name=f"conv{i}"
        )(x)
    noise = keras.layers.Conv2D(1, 3, padding="same", name="noise")(x)
    clean = keras.layers.Subtract(name="clean")([inputs, noise])
    model = keras.Model(inputs, clean, name="denoiser")
    model.compile(keras.optimizers.Adam(3e-3), "mse", metrics=["mae"])
    return model


def classifier(seed):
    keras.utils.set_random_seed(seed)
    return common.DEMO["build_model"]()


def train(model, splits, epochs, batch_size):
    model.fit(*splits["train"], epochs=epochs, batch_size=batch_size, verbose=0)
    return model


def mae(tflite, splits):
    x, clean = splits["test"]
    return float(np.mean(np.abs(keras_quant.run_tflite(tflite, x) - clean)))


def accuracy(tflite, splits):
    x, y = splits["test"]
    return float(np.mean(keras_quant.run_tflite(tflite, x).argmax(-1) == y))


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """A model, its data and how its test score is read."""

    title: str
    build: object
    splits: dict
    score: object
    epochs: int
    unit: str
    scale: float
    metric: str = "accuracy"
    selection_unit: str = "points"


def auto_part(task, budget, seed, batch_size, folder):
    """Part 1 for one task and seed: the auto export's trials and outcome."""
    model = train(task.build(seed), task.splits, task.epochs, batch_size)
    observed = keras_quant.observe(model)
    observed.evaluate(*task.splits["val"], verbose=0)
    result = keras_quant.export(
        observed,
        os.path.join(folder, "auto.tflite"),
        "auto",
        validation_data=task.splits["val"],
        max_accuracy_drop=budget,
    )
    float16 = keras_quant.export(
        observed, os.path.join(folder, "f16.tflite"), "float16"
    )
    reference = os.path.join(folder, "float32.tflite")
    keras_quant.export(model, reference, "float32")
    return {
        "selection": result.selection,
        "float16_bytes": float16.size_bytes,
        "float_test": task.score(reference, task.splits),
        "chosen_test": task.score(result.path, task.splits),
    }


def estimator_part(task, seed, batch_size, folder):
    """Part 2 for one task and seed: `{estimator: (score, mean SQNR)}`."""
    splits, score = task.splits, task.score
    model = train(task.build(seed), splits, task.epochs, batch_size)
    reference = os.path.join(folder, "float32.tflite")
    keras_quant.export(model, reference, "float32")
    found = {"float": (score(reference, splits), None)}
    for estimator in ESTIMATORS:
        observed = keras_quant.observe(model, estimator)
        observed.evaluate(*splits["val"], verbose=0)
        path = os.path.join(folder, f"{estimator}.tflite")
        keras_quant.export(observed, path, "int8")
        points = keras_quant.analyze(observed, splits["val"]).points
        sqnr = float(np.mean([min(p.sqnr_db, 100.0) for p in points]))
        found[estimator] = (score(path, splits), sqnr)
    return found


def print_auto(task, budget, per_seed):
    unit = task.selection_unit
    print(
        f"Part 1: mode='auto' on the {task.title}, budget: {task.metric} at "
        f"most {budget} {unit} worse than float (validation split)"
    )
    for seed, found in per_seed.items():
        selection = found["selection"]
        print()
        print(f"seed {seed}:")
        print(selection.table())
        print(f"float16 would be {found['float16_bytes'] / 1024:.1f} KB")
        chosen = selection.chosen
        smaller = chosen.size_bytes < found["float16_bytes"]
        print(
            f"chosen: {chosen.label}, {chosen.size_bytes / 1024:.1f} KB, "
            f"{'smaller' if smaller else 'NOT smaller'} than float16"
        )
        print(
            f"test {task.unit}: float {task.scale * found['float_test']:.3f}"
            f", chosen {task.scale * found['chosen_test']:.3f}"
        )
        print(f"why: {selection.reason}")
    print()


def print_estimators(task, per_seed):
    print(
        f"Part 2: {task.title}; test {task.unit}, mean over seeds (and mean "
        "SQNR over quantization points)"
    )
    unit = task.unit
    rows = []
    for column in ["float", *ESTIMATORS]:
        scores = [found[column][0] * task.scale for found in per_seed.values()]
        sqnrs = [found[column][1] for found in per_seed.values()]
        sqnr = "-" if sqnrs[0] is None else f"{np.mean(sqnrs):.1f} dB"
        per = " ".join(f"{s:.3f}" for s in scores)
        rows.append([column, f"{np.mean(scores):.3f}", per, sqnr])
    print()
    common.print_table(["estimator", unit, "per seed", "SQNR"], rows)
    print()


def tabular_model(x_train, n_classes, seed):
    """`Normalization` adapted on `x_train`, then an MLP; compiled."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    norm = keras.layers.Normalization(name="norm")
    norm.adapt(x_train)
    inputs = keras.Input((x_train.shape[1],), name="features")
    x = norm(inputs)
    x = keras.layers.Dense(64, activation="relu", name="dense0")(x)
    x = keras.layers.Dense(32, activation="relu", name="dense1")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="out")(x)
    model = keras.Model(inputs, outputs, name="tabular")
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def tabular_part(load, seed, batch_size, folder):
    """Part 3 for one data set and seed: the `ExportResult` of the auto
    export, judged on the validation split."""
    x, y = load(return_X_y=True)
    x, y = x.astype("float32"), y.astype("int32")
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.3, random_state=seed, stratify=y
    )
    model = tabular_model(x_train, len(np.unique(y)), seed)
    observed = keras_quant.observe(model)
    observed.fit(
        x_train,
        y_train,
        epochs=TABULAR_EPOCHS,
        batch_size=batch_size,
        verbose=0,
    )
    observed.evaluate(x_val, y_val, verbose=0)
    return keras_quant.export(
        observed,
        os.path.join(folder, "tabular.tflite"),
        mode="auto",
        max_accuracy_drop=TABULAR_BUDGET,
        validation_data=(x_val, y_val),
    )


def tabular_goal(result):
    """int8 with `norm` float, within the budget, smaller than float32."""
    return (
        result.mode is keras_quant.Mode.INT8
        and "norm" in result.keep_float
        and 100 * result.metric_drop("accuracy") <= TABULAR_BUDGET
        and result.size_ratio < TABULAR_SIZE_RATIO
    )


def print_tabular(per_set):
    print(
        "Part 3: Normalization inside the model on raw tabular features, "
        f"mode='auto', budget: accuracy at most {TABULAR_BUDGET} point "
        "worse than float (validation split); per seed, or mean over seeds"
    )
    print(
        "goal: int8 with 'norm' float, drop <= "
        f"{TABULAR_BUDGET} point, size < {TABULAR_SIZE_RATIO} of float32"
    )
    print()
    rows = []
    for name, per_seed in per_set.items():
        results = list(per_seed.values())

        def mean(values):
            return f"{np.mean(list(values)):.2f}"

        met = sum(tabular_goal(r) for r in results)
        rows.append(
            [
                name,
                " / ".join(r.mode.value for r in results),
                " / ".join(str(list(r.keep_float)) for r in results),
                mean(100 * r.float_metrics["accuracy"] for r in results),
                mean(100 * r.quantized_metrics["accuracy"] for r in results),
                mean(100 * r.metric_drop("accuracy") for r in results),
                mean(r.size_ratio for r in results),
                f"{met}/{len(results)} seeds",
            ]
        )
    common.print_table(
        [
            "data set",
            "mode",
            "keep_float",
            "float acc %",
            "quant acc %",
            "drop pts",
            "size ratio",
            "goal met",
        ],
        rows,
    )
    for name, per_seed in per_set.items():
        seed, result = next(iter(per_seed.items()))
        print()
        print(f"why ({name}, seed {seed}): {result.selection.reason}")
    print()


def main(argv=None):
    parser = common.make_parser(__doc__, seeds=3)
    parser.add_argument(
        "--parts",
        nargs="+",
        type=int,
        choices=PARTS,
        default=list(PARTS),
        help="run only these parts (1: auto, 2: estimators, 3: tabular)",
    )
    args = parser.parse_args(argv)
    data = common.load_digits()
    noisy = noisy_digits(data)
    exposed = exposed_digits(data)
    plain = {
        "train": (data.x_train, data.y_train),
        "val": data.validation,
        "test": data.test,
    }
    seeds = range(args.seeds)
    auto, budgets, estimators, tabular = {}, {}, {}, {}
    with tempfile.TemporaryDirectory() as folder, common.quiet():
        denoising = Task(
            "denoiser",
            denoiser,
            noisy,
            mae,
            DENOISER_EPOCHS,
            "MAE x 1000",
            1000,
            metric="mae",
            selection_unit="%",
        )
        exposure = Task(
            "classifier, exposed digits",
            classifier,
            exposed,
            accuracy,
            args.epochs,
            "accuracy %",
            100,
        )
        if 1 in args.parts:
            budgets = {denoising: BUDGET, exposure: CLASSIFIER_BUDGET}
            auto = {
                task: {
                    s: auto_part(task, budget, s, args.batch_size, folder)
                    for s in seeds
                }
                for task, budget in budgets.items()
            }
        tasks = [
            denoising,
            Task(
                "classifier",
                classifier,
                plain,
                accuracy,
                args.epochs,
                "accuracy %",
                100,
            ),
            exposure,
        ]
        if 2 in args.parts:
            estimators = {
                task: {
                    s: estimator_part(task, s, args.batch_size, folder)
                    for s in seeds
                }
                for task in tasks
            }
        if 3 in args.parts:
            tabular = {
                name: {
                    s: tabular_part(load, s, args.batch_size, folder)
                    for s in seeds
                }
                for name, load in TABULAR.items()
            }
    # `--parts 1 2 3` rather than `--parts [1, 2, 3]` in the reproduce line.
    shown = argparse.Namespace(**vars(args))
    shown.parts = " ".join(str(part) for part in args.parts)
    common.print_header(
        "(e) accuracy guard: mode='auto' and range estimators",
        "benchmarks/accuracy_guard.py",
        shown,
    )
    for task, per_seed in auto.items():
        print_auto(task, budgets[task], per_seed)
    for task, per_seed in estimators.items():
        print_estimators(task, per_seed)
    if tabular:
        print_tabular(tabular)
    return {
        "auto": auto,
        "budgets": budgets,
        "estimators": estimators,
        "tabular": tabular,
    }


if __name__ == "__main__":
    main()
