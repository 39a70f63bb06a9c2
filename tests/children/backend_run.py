"""One training script for every Keras backend: the child of the backend
tests. Run it with `KERAS_BACKEND` set to tensorflow, jax or torch:

    python tests/children/backend_run.py MODEL.keras FOLDER

It loads the float digits CNN the test built (the same weights on every
backend), then, with a learning rate of 0 so the weights stay those of the
file and the ranges depend only on the data:

- trains with `RangeCalibration()` and a `ModelCheckpoint` whose saves
  export six modes (`FOLDER/ckpt.keras`, `FOLDER/ckpt_<mode>.tflite`);
- observes a second copy with the percentile estimator and trains it with
  `RangeCalibration("both", log_dir=...)`;
- calibrates a copy with each range estimator (`evaluate`);
- trains a quantization-aware copy one epoch.

Every collected range goes to `FOLDER/ranges.json`, keyed by run and point.
"""

import json
import os
import sys

import keras
import numpy as np
from sklearn.datasets import load_digits

import keras_quant
from keras_quant.callbacks import RangeCalibration
from keras_quant.observation.ranges import ESTIMATORS

SAVE_MODES = ("float32", "float16", "dynamic", "int8", "int8_only", "int16x8")


def digits():
    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    return x[:600], data.target[:600], x[600:900], data.target[600:900]


def frozen(model):
    """`model` compiled to train with a learning rate of 0."""
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.0),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    return model


def fit(model, callbacks):
    x, y, x_val, y_val = digits()
    model.fit(
        x,
        y,
        validation_data=(x_val, y_val),
        epochs=2,
        batch_size=50,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
    )


def ranges(model):
    return {o.point: list(o.range()) for o in model.observers}


def main(model_path, folder):
    found = {}
    observed = keras_quant.observe(
        frozen(keras.saving.load_model(model_path)), save_modes=SAVE_MODES
    )
    checkpoint = keras.callbacks.ModelCheckpoint(f"{folder}/ckpt.keras")
    fit(observed, [RangeCalibration(), checkpoint])
    found["validation"] = ranges(observed)

    percentile = keras_quant.observe(
        frozen(keras.saving.load_model(model_path)),
        estimator="percentile",
        save_modes=(),
    )
    log_dir = os.path.join(folder, "logs")
    fit(percentile, [RangeCalibration("both", log_dir=log_dir)])
    found["both_percentile"] = ranges(percentile)

    _, _, x_val, y_val = digits()
    for estimator in ESTIMATORS:
        calibrated = keras_quant.observe(
            keras.saving.load_model(model_path),
            estimator=estimator,
            save_modes=(),
        )
        calibrated.evaluate(x_val, y_val, batch_size=50, verbose=0)
        found[f"estimator_{estimator}"] = ranges(calibrated)

    qat = keras_quant.quantize_aware(
        frozen(keras.saving.load_model(model_path))
    )
    frozen(qat)
    fit(qat, [])
    found["qat"] = ranges(qat)
    with open(os.path.join(folder, "ranges.json"), "w") as stream:
        json.dump({"backend": keras.backend.backend(), **found}, stream)
    print(np.mean([len(r) for r in found.values()]))


if __name__ == "__main__":
    main(*sys.argv[1:3])
