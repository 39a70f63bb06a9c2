"""The child of `test_killed_export`: on the backend `KERAS_BACKEND`
names, observes a small model, prints `exporting`, then exports it (a
JAX or PyTorch process exports through a TensorFlow child), so that the
test can kill it during the export.

    python tests/children/killed_export.py OUT.tflite
"""

import sys

import keras
import numpy as np

import keras_quant


def main(path):
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    observed = keras_quant.observe(model, save_modes=())
    observed.predict(np.random.default_rng(0).normal(size=(64, 8)), verbose=0)
    print("exporting", flush=True)
    keras_quant.export(observed, path, "int8")
    print("exported", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
