"""One worker of a two-worker `MultiWorkerMirroredStrategy` on loopback,
or the single-process reference run: the child of `test_multi_worker.py`.

    python tests/children/multi_worker.py --index I --ports P0,P1 --out DIR
    python tests/children/multi_worker.py --single --out DIR

It builds a small digits CNN (fixed seed: the same weights in every
process), observes it inside `strategy.scope()`, and trains it two epochs
on the same global batches in every run (each worker gets half of each),
with `RangeCalibration()`, a `TFLiteExport` callback (`int8` and
`float16`, compared on the validation data) and a `ModelCheckpoint` whose
saves export `float16` beside the `.keras` (the save hook). It writes
`DIR/ranges.json`, then exports:

- the chief (and the single process) alone: `keras_quant.export` in
  `int8` with `validation_data`, and in `float16`;
- every other worker: `keras_quant.export_many` of the same two modes,
  which must write nothing there and return `[]`;

and last `DIR/run.json`: the ranges, the training history, digests of the
weights, what each export wrote, and the seconds it all took.

`--batch-norm` adds a `BatchNormalization` after the convolution:
`local` (Keras's default: statistics per replica) or `synchronized`.
`--without-fix` trains the plain CNN, not observed (`observe` applies
`keras_internals.fix_multi_worker_training` under a multi-worker
strategy), and only records in `run.json` how Keras's own `fit` fails.
"""

import argparse
import hashlib
import json
import os
import sys
import time

GLOBAL_BATCH = 64
TRAIN, VALIDATION = slice(0, 1024), slice(1024, 1280)
SEED = 7
MODES = ("int8", "float16")


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder to write to")
    parser.add_argument("--index", type=int, help="this worker's task index")
    parser.add_argument("--ports", help="the workers' ports: P0,P1")
    parser.add_argument(
        "--single", action="store_true", help="one process, no strategy"
    )
    parser.add_argument(
        "--batch-norm",
        choices=("none", "local", "synchronized"),
        default="none",
    )
    parser.add_argument(
        "--without-fix",
        action="store_true",
        help="record how Keras's fit fails without keras-quant's fix",
    )
    args = parser.parse_args(argv)
    if not args.single and (args.index is None or args.ports is None):
        parser.error("a worker needs --index and --ports (or pass --single)")
    return args


def cluster_config(index, ports):
    """The `TF_CONFIG` of worker `index` in a cluster on 127.0.0.1."""
    workers = [f"127.0.0.1:{port}" for port in ports.split(",")]
    return json.dumps(
        {
            "cluster": {"worker": workers},
            "task": {"type": "worker", "index": index},
        }
    )


def make_strategy(args):
    """The two-worker strategy, or the default one for `--single`. Before
    anything else of TensorFlow runs: collectives are configured once."""
    import tensorflow as tf

    if args.single:
        return tf.distribute.get_strategy()
    os.environ["TF_CONFIG"] = cluster_config(args.index, args.ports)
    return tf.distribute.MultiWorkerMirroredStrategy()


def digits():
    """Train and validation `(x, y)`: 8x8x1 images in [0, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    y = data.target.astype("int32")
    return (x[TRAIN], y[TRAIN]), (x[VALIDATION], y[VALIDATION])


def batches(data):
    """`data` in global batches, each worker getting its share of each."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    dataset = tf.data.Dataset.from_tensor_slices(data)
    return dataset.batch(GLOBAL_BATCH).with_options(options)


def build_model(batch_norm):
    """The float digits CNN, the same weights in every process."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(SEED)
    inputs = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(8, 3, padding="same", use_bias=batch_norm == "none")(
        inputs
    )
    if batch_norm != "none":
        x = layers.BatchNormalization(
            synchronized=batch_norm == "synchronized"
        )(x)
    x = layers.ReLU()(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="digits")


def observed_model(batch_norm):
    """The observed CNN, compiled (its replay sample in float32: a
    multi-worker strategy cannot broadcast bfloat16 initial values)."""

    import keras_quant

    observed = keras_quant.observe(
        build_model(batch_norm), save_modes=("float16",)
    )
    return compiled(observed)


def compiled(model):
    import keras

    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def digest(weights):
    """SHA-256 of `weights` (variables), in order."""
    sha = hashlib.sha256()
    for weight in weights:
        sha.update(weight.numpy().tobytes())
    return sha.hexdigest()


def batch_norm_statistics(model):
    """`{variable path: values}` of the BatchNormalization moving
    statistics."""
    return {
        variable.path: variable.numpy().tolist()
        for variable in model.variables
        if "moving_" in variable.path
    }


def train(observed, train_data, validation_data, out):
    """Two epochs with `RangeCalibration`, a `TFLiteExport` at the end and
    a `ModelCheckpoint` each epoch (their `.tflite` files written by the
    chief only). Returns the history and the callback's results."""
    import keras

    import keras_quant

    export = keras_quant.callbacks.TFLiteExport(
        os.path.join(out, "callback_{mode}.tflite"),
        modes=MODES,
        validation_data=validation_data,
    )
    history = observed.fit(
        batches(train_data),
        validation_data=batches(validation_data),
        epochs=2,
        shuffle=False,  # the batches are the same in every run
        verbose=0,
        callbacks=[
            keras_quant.callbacks.RangeCalibration(),
            export,
            keras.callbacks.ModelCheckpoint(os.path.join(out, "ckpt.keras")),
        ],
    )
    return history.history, export.results


def export(observed, validation_data, out):
    """The chief exports alone with `export`; another worker calls
    `export_many`, which writes nothing there. Returns the results."""
    import keras_quant
    from keras_quant.exporting import workers

    paths = {mode: os.path.join(out, f"m_{mode}.tflite") for mode in MODES}
    if not workers.exports_here(observed):
        return keras_quant.export_many(
            observed, paths, validation_data=validation_data
        )
    return [
        keras_quant.export(
            observed, paths["int8"], "int8", validation_data=validation_data
        ),
        keras_quant.export(observed, paths["float16"], "float16"),
    ]


def write_json(out, name, value):
    """Writes `value` as JSON to `out/name`."""
    with open(os.path.join(out, name), "w") as stream:
        json.dump(value, stream, default=str)


def fit_failure(model, train_data, validation_data):
    """How Keras's own `fit` of a plain model fails: `"Type: first line
    ... last line"` of the error (the lines between print a batch), or
    None."""
    try:
        model.fit(
            batches(train_data),
            validation_data=batches(validation_data),
            epochs=1,
            verbose=0,
        )
    except Exception as error:  # the failure is the finding
        lines = str(error).splitlines() or [""]
        return f"{type(error).__name__}: {lines[0]} ... {lines[-1]}"
    return None


def main(argv):
    args = parse(argv)
    strategy = make_strategy(args)
    started = time.monotonic()

    train_data, validation_data = digits()
    if args.without_fix:
        with strategy.scope():
            plain = compiled(build_model(args.batch_norm))
        failure = fit_failure(plain, train_data, validation_data)
        write_json(args.out, "run.json", {"fit_error": failure})
        return
    with strategy.scope():
        observed = observed_model(args.batch_norm)
    history, callback_results = train(
        observed, train_data, validation_data, args.out
    )
    ranges = {o.point: list(o.range()) for o in observed.observers}
    write_json(args.out, "ranges.json", ranges)
    results = export(observed, validation_data, args.out)
    found = {
        "ranges": ranges,
        "history": history,
        "weights": digest(observed.weights),
        "trainable_weights": digest(observed.trainable_weights),
        "batch_norm": batch_norm_statistics(observed),
        "callback_exports": [r.path for r in callback_results],
        "exports": [r.to_dict() for r in results],
        "seconds": time.monotonic() - started,
    }
    write_json(args.out, "run.json", found)


if __name__ == "__main__":
    main(sys.argv[1:])
