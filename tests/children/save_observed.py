"""Trains nothing, saves an observed model with its exports in a loop
until killed, printing a line after each save: the child of the kill test
on the real save path.

    python tests/children/save_observed.py FOLDER
"""

import sys

import keras
import numpy as np

import keras_quant
import keras_quant.quiet  # noqa: F401  (first: TensorFlow's start-up lines)


def main(folder):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    observed = keras_quant.observe(model, save_modes=("float16", "dynamic"))
    data = np.random.default_rng(0).random((32, 8, 8, 1)).astype("float32")
    observed.predict(data, verbose=0)
    while True:
        weights = [w + 0.01 for w in model.get_weights()]
        model.set_weights(weights)
        observed.save(f"{folder}/m.keras")
        print("saved", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
