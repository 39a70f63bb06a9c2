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

Run: `python benchmarks/accuracy_guard.py --seeds 3`.
"""

import dataclasses
import os
import tempfile

import common
import keras
import numpy as np

import keras_quant

ESTIMATORS = ("minmax", "percentile", "mse", "entropy", "auto")
NOISE = 0.2
DENOISER_EPOCHS = 40
BUDGET = 0.1
CLASSIFIER_BUDGET = 0.5


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


def main(argv=None):
    args = common.make_parser(__doc__, seeds=3).parse_args(argv)
    data = common.load_digits()
    noisy = noisy_digits(data)
    exposed = exposed_digits(data)
    plain = {
        "train": (data.x_train, data.y_train),
        "val": data.validation,
        "test": data.test,
    }
    seeds = range(args.seeds)
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
        estimators = {
            task: {
                s: estimator_part(task, s, args.batch_size, folder)
                for s in seeds
            }
            for task in tasks
        }
    common.print_header(
        "(e) accuracy guard: mode='auto' and range estimators",
        "benchmarks/accuracy_guard.py",
        args,
    )
    for task, per_seed in auto.items():
        print_auto(task, budgets[task], per_seed)
    for task, per_seed in estimators.items():
        print_estimators(task, per_seed)
    return {"auto": auto, "budgets": budgets, "estimators": estimators}


if __name__ == "__main__":
    main()
