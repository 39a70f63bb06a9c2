"""(d) QAT: float, post-training int8, keras-quant QAT and tfmot QAT.

One architecture without BatchNormalization and with few units
(`--architecture residual`, the default: sixteen residual Dense(12) blocks,
whose residual stream widens block after block; or `mlp`: six Dense(12,
relu)) is trained in Keras 3 on the demo's digits split. From the same
float weights:

- float +5: the float model trained as many more epochs as QAT trains, so
  that QAT's gain from extra training is not read as recovery;

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
realistic digits models tried does it (docs/decisions.md, D25); the
residual model loses about one.

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

QAT_LEARNING_RATE = 1e-3
QAT_EPOCHS = 5


def mlp(api):
    """Six Dense(12, relu) layers, no BatchNormalization."""
    inputs = api.Input((8, 8, 1))
    x = api.layers.Flatten()(inputs)
    for _ in range(6):
        x = api.layers.Dense(12, activation="relu")(x)
    return api.Model(inputs, api.layers.Dense(10)(x))


def residual(api, width=12, blocks=16):
    """`blocks` residual Dense(`width`) blocks, no BatchNormalization
    (sixteen of Dense(12) by default).

    The residual stream widens block after block (wide activations).
    """
    inputs = api.Input((8, 8, 1))
    x = api.layers.Dense(width)(api.layers.Flatten()(inputs))
    for _ in range(blocks):
        branch = api.layers.Dense(width, activation="relu")(x)
        x = api.layers.Add()([x, api.layers.Dense(width)(branch)])
    x = api.layers.ReLU()(x)
    return api.Model(inputs, api.layers.Dense(10)(x))


# name -> (builder taking `keras` or `tf_keras`, float learning rate).
ARCHITECTURES = {"residual": (residual, 1e-3), "mlp": (mlp, 1e-2)}


def keras3_model(architecture, seed):
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    build, learning_rate = ARCHITECTURES[architecture]
    model = build(keras)
    compile_classifier(model, keras, learning_rate)
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


def keras_quant_part(data, architecture, seed, epochs, batch_size, folder):
    """Float, post-training and keras-quant QAT accuracies; float weights."""
    model = keras3_model(architecture, seed)
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
    figures = {
        "float": float_accuracy,
        "float_more": float_trained_more(architecture, weights, data, seed),
        "ptq": ptq,
        "keras_quant": ours,
    }
    return figures, weights


def float_trained_more(architecture, weights, data, seed):
    """The float model trained as long as QAT trains, for a fair baseline:
    QAT's gain over float is partly those extra epochs."""
    model = keras3_model(architecture, seed)
    model.set_weights(weights)
    compile_classifier(model, keras, QAT_LEARNING_RATE)
    keras.utils.set_random_seed(seed)
    train(model, data, QAT_EPOCHS, common.BATCH_SIZE)
    return float(model.evaluate(*data.test, verbose=0)[1])


def tfmot_part(weights_path, architecture, seed, batch_size, folder):
    """tfmot QAT from the given float weights (run in its own process)."""
    import tensorflow_model_optimization as tfmot
    import tf_keras

    tf_keras.utils.set_random_seed(seed)
    model = ARCHITECTURES[architecture][0](tf_keras)
    with np.load(weights_path) as stored:
        model.set_weights([stored[f"w{i}"] for i in range(len(stored.files))])
    qat = tfmot.quantization.keras.quantize_model(model)
    compile_classifier(qat, tf_keras, QAT_LEARNING_RATE)
    data = common.load_digits()
    train(qat, data, QAT_EPOCHS, batch_size)
    return int8_accuracy(qat, data, folder, "tfmot.tflite")


def run_tfmot(weights, architecture, seed, batch_size, folder):
    path = os.path.join(folder, "weights.npz")
    np.savez(path, **{f"w{i}": w for i, w in enumerate(weights)})
    found = subprocess.run(
        [
            sys.executable,
            __file__,
            "--tfmot-part",
            path,
            architecture,
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


def measure(architecture, seed, epochs, batch_size):
    data = common.load_digits()
    with tempfile.TemporaryDirectory() as folder:
        with common.quiet():
            figures, weights = keras_quant_part(
                data, architecture, seed, epochs, batch_size, folder
            )
        figures["tfmot"] = run_tfmot(
            weights, architecture, seed, batch_size, folder
        )
    return figures


def report(per_seed, args):
    common.print_header(
        "(d) QAT: keras-quant vs tfmot", "benchmarks/qat_vs_tfmot.py", args
    )
    build, learning_rate = ARCHITECTURES[args.architecture]
    print(
        f"{build.__doc__.splitlines()[0]} {args.epochs} float epochs (Adam "
        f"{learning_rate}), then {QAT_EPOCHS} QAT epochs (Adam "
        f"{QAT_LEARNING_RATE}); test accuracy in %, int8 in LiteRT. "
        f"'float +{QAT_EPOCHS}' trains the float model as long as QAT."
    )
    columns = ["float", "float_more", "ptq", "keras_quant", "tfmot"]
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
        [
            "",
            "float",
            f"float +{QAT_EPOCHS}",
            "int8 PTQ",
            "keras-quant QAT",
            "tfmot QAT",
        ],
        rows,
    )
    loss = mean["float"] - mean["ptq"]
    gap = mean["keras_quant"] - mean["tfmot"]
    print()
    print(f"post-training loss: {100 * loss:+.2f} points (issue asks >= 2)")
    if loss > 1e-6:  # not float noise: one test image is 0.0028
        for name in ("keras_quant", "tfmot"):
            recovered = (mean[name] - mean["ptq"]) / loss
            print(
                f"{name} QAT recovers {100 * recovered:.0f} % of it (QAT "
                f"also trains {QAT_EPOCHS} more epochs: see 'float "
                f"+{QAT_EPOCHS}')"
            )
    gain = mean["keras_quant"] - mean["float_more"]
    print(
        f"keras-quant QAT (int8) vs float trained as long: "
        f"{100 * gain:+.2f} points"
    )
    print(
        f"goal (within 0.5 points of tfmot), difference {100 * gap:+.2f}: "
        # 1e-12: accuracies are multiples of 1/360, and an exact 0.5-point
        # gap (9 of 1800 predictions) must not fail on float rounding.
        f"{common.goal_text(abs(gap) <= 0.005 + 1e-12)}"
    )
    print()
    return {"mean": mean}


def main(argv=None):
    parser = common.make_parser(__doc__, seeds=5)
    parser.set_defaults(epochs=30)
    parser.add_argument(
        "--architecture",
        choices=list(ARCHITECTURES),
        default="residual",
        help="model to quantize (default: residual)",
    )
    args = parser.parse_args(argv)
    per_seed = {
        seed: measure(args.architecture, seed, args.epochs, args.batch_size)
        for seed in range(args.seeds)
    }
    return report(per_seed, args)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--tfmot-part":
        _, _, weights_path, architecture, seed, batch_size, folder = sys.argv
        with common.quiet():
            accuracy = tfmot_part(
                weights_path, architecture, int(seed), int(batch_size), folder
            )
        print(json.dumps(accuracy))
    else:
        main()
