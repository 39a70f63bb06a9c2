"""(d) QAT: float, post-training int8, keras-quant QAT and tfmot QAT.

One architecture, no BatchNormalization, few units (six Dense(12, relu)
layers), is trained in Keras 3 on the demo's digits split. From the same
float weights:

- post-training int8: `observe`, ranges from the validation split;
- keras-quant QAT: `quantize_aware` from those ranges, fine-tuned;
- tfmot QAT: the same architecture in tf_keras, given the same float
  weights, `tfmot.quantization.keras.quantize_model`, fine-tuned with the
  same optimizer, epochs and batch size, in a separate process (importing
  tfmot switches TensorFlow to legacy Keras).

Every int8 model is exported to `.tflite` and evaluated in LiteRT on the
held-out test split. Goal (issue 3): QAT recovers at least half of the
post-training loss, within 0.5 points of tfmot. The issue also asks for a
model on which post-training int8 loses two points or more: on none of the
realistic digits models tried does it (docs/decisions.md, D25).

Run: `python benchmarks/qat_vs_tfmot.py --seeds 5`.
"""

import json
import os
import subprocess
import sys
import tempfile

import common
import keras
import numpy as np

import keras_quant

WIDTH = 12
DEPTH = 6
LEARNING_RATE = 1e-2
QAT_LEARNING_RATE = 1e-3
QAT_EPOCHS = 5


def layer_specs():
    """The architecture, as (kind, units, activation), for both Kerases."""
    return [("dense", WIDTH, "relu")] * DEPTH + [("dense", 10, None)]


def keras3_model(seed):
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    for _, units, activation in layer_specs():
        x = keras.layers.Dense(units, activation=activation)(x)
    model = keras.Model(inputs, x)
    compile_classifier(model, keras, LEARNING_RATE)
    return model


def compile_classifier(model, api, learning_rate):
    """Compiles with Adam and logits cross-entropy, in Keras 3 or tf_keras."""
    model.compile(
        optimizer=api.optimizers.Adam(learning_rate),
        loss=api.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def test_accuracy(tflite, data):
    found = keras_quant.run_tflite(tflite, data.x_test)
    return float(np.mean(np.argmax(found, -1) == data.y_test))


def int8_accuracy(model, data, folder, name):
    result = keras_quant.export(model, os.path.join(folder, name), "int8")
    return test_accuracy(result.path, data)


def train(model, data, epochs, batch_size):
    """Fits on the training split (Keras 3 or tf_keras)."""
    model.fit(
        data.x_train,
        data.y_train,
        epochs=epochs,
        batch_size=batch_size,
        verbose=0,
    )


def keras_quant_part(data, seed, epochs, batch_size, folder):
    """Float, post-training and keras-quant QAT accuracies; float weights."""
    model = keras3_model(seed)
    train(model, data, epochs, batch_size)
    weights = model.get_weights()
    float_accuracy = float(model.evaluate(*data.test, verbose=0)[1])
    observed = keras_quant.observe(model)
    observed.evaluate(*data.validation, verbose=0)
    ptq = int8_accuracy(observed, data, folder, "ptq.tflite")
    qat = keras_quant.quantize_aware(observed)
    compile_classifier(qat, keras, QAT_LEARNING_RATE)
    keras.utils.set_random_seed(seed)
    train(qat, data, QAT_EPOCHS, batch_size)
    ours = int8_accuracy(qat, data, folder, "qat.tflite")
    return {"float": float_accuracy, "ptq": ptq, "keras_quant": ours}, weights


def tfmot_part(weights_path, seed, batch_size, folder):
    """tfmot QAT from the given float weights (run in its own process)."""
    import tensorflow_model_optimization as tfmot
    import tf_keras

    tf_keras.utils.set_random_seed(seed)
    model = tf_keras.Sequential([tf_keras.Input((8, 8, 1))])
    model.add(tf_keras.layers.Flatten())
    for _, units, activation in layer_specs():
        model.add(tf_keras.layers.Dense(units, activation=activation))
    with np.load(weights_path) as stored:
        model.set_weights([stored[f"w{i}"] for i in range(len(stored.files))])
    qat = tfmot.quantization.keras.quantize_model(model)
    compile_classifier(qat, tf_keras, QAT_LEARNING_RATE)
    data = common.load_digits()
    train(qat, data, QAT_EPOCHS, batch_size)
    return int8_accuracy(qat, data, folder, "tfmot.tflite")


def run_tfmot(weights, seed, batch_size, folder):
    path = os.path.join(folder, "weights.npz")
    np.savez(path, **{f"w{i}": w for i, w in enumerate(weights)})
    found = subprocess.run(
        [
            sys.executable,
            __file__,
            "--tfmot-part",
            path,
            str(seed),
            str(batch_size),
            folder,
        ],
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        raise RuntimeError(f"tfmot part failed:\n{found.stderr[-3000:]}")
    return json.loads(found.stdout.strip().splitlines()[-1])


def measure(seed, epochs, batch_size):
    data = common.load_digits()
    with tempfile.TemporaryDirectory() as folder:
        with common.quiet():
            figures, weights = keras_quant_part(
                data, seed, epochs, batch_size, folder
            )
        figures["tfmot"] = run_tfmot(weights, seed, batch_size, folder)
    return figures


def report(per_seed, args):
    common.print_header(
        "(d) QAT: keras-quant vs tfmot", "benchmarks/qat_vs_tfmot.py", args
    )
    print(
        f"{DEPTH} x Dense({WIDTH}, relu), no BatchNormalization; {args.epochs} "
        f"float epochs (Adam {LEARNING_RATE}), then {QAT_EPOCHS} QAT epochs "
        f"(Adam {QAT_LEARNING_RATE}); test accuracy in % in LiteRT."
    )
    columns = ["float", "ptq", "keras_quant", "tfmot"]
    rows = [
        [f"seed {seed}", *[f"{100 * f[c]:.2f}" for c in columns]]
        for seed, f in per_seed.items()
    ]
    mean = {
        c: float(np.mean([f[c] for f in per_seed.values()])) for c in columns
    }
    rows.append(["mean", *[f"{100 * mean[c]:.2f}" for c in columns]])
    print()
    common.print_table(
        ["", "float", "int8 PTQ", "keras-quant QAT", "tfmot QAT"], rows
    )
    loss = mean["float"] - mean["ptq"]
    gap = mean["keras_quant"] - mean["tfmot"]
    print()
    print(f"post-training loss: {100 * loss:+.2f} points (issue asks >= 2)")
    gain = mean["keras_quant"] - mean["float"]
    print(f"keras-quant QAT vs float: {100 * gain:+.2f} points")
    print(
        f"goal (within 0.5 points of tfmot), difference {100 * gap:+.2f}: "
        f"{common.goal_text(abs(gap) <= 0.005)}"
    )
    print()
    return {"mean": mean}


def main(argv=None):
    args = common.make_parser(__doc__, seeds=3).parse_args(argv)
    per_seed = {
        seed: measure(seed, args.epochs, args.batch_size)
        for seed in range(args.seeds)
    }
    return report(per_seed, args)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--tfmot-part":
        _, _, weights_path, seed, batch_size, folder = sys.argv
        with common.quiet():
            accuracy = tfmot_part(
                weights_path, int(seed), int(batch_size), folder
            )
        print(json.dumps(accuracy))
    else:
        main()
