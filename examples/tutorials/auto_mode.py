"""Tutorial 4: let keras-quant choose the mode, and see why.

Run: python examples/tutorials/auto_mode.py [output folder]
"""

import os
import sys

import keras_quant.quiet  # noqa: F401  TensorFlow's start-up lines, hidden

# isort: split
import keras
import numpy as np
from sklearn.datasets import load_digits

import keras_quant

out = sys.argv[1] if len(sys.argv) > 1 else "tutorial_out"
keras.utils.set_random_seed(0)
digits = load_digits()
x = (digits.images / 16.0).astype("float32")[..., np.newaxis]
y = digits.target

model = keras.Sequential(
    [
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, activation="relu", name="conv"),
        keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu", name="hidden"),
        keras.layers.Dense(10, activation="softmax", name="classes"),
    ]
)
model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
observed = keras_quant.observe(model)
observed.fit(
    x[:1400],
    y[:1400],
    validation_data=(x[1400:], y[1400:]),
    epochs=5,
    verbose=0,
    callbacks=[keras_quant.callbacks.RangeCalibration()],
)
validation = (x[1400:], y[1400:])

# 1. Where does int8 lose precision? Per point, and per layer kept float.
print(keras_quant.analyze(observed, validation).table())

# 2. The smallest, fastest CPU mode within half a point of float accuracy.
result = keras_quant.export(
    observed,
    os.path.join(out, "digits_auto.tflite"),
    mode="auto",
    validation_data=validation,
    max_accuracy_drop=0.5,
    target="cpu",
    report_dir=os.path.join(out, "auto_report"),
)
print(result.selection.table())
print(result.selection.reason)

# 3. Keep a layer float by hand, if you know better.
kept = keras_quant.export(
    observed,
    os.path.join(out, "digits_int8_head_float.tflite"),
    keep_float=["classes"],
    validation_data=validation,
)
print(f"int8 with 'classes' float: {kept.size_bytes / 1024:.1f} KB")
