"""Tutorial 3: `.tflite` files written by ModelCheckpoint, at save time.

Run: python examples/tutorials/save_hook_checkpoint.py [output folder]
"""

import os
import sys

import keras_quant.quiet  # noqa: F401  TensorFlow's start-up lines, hidden

# isort: split
import keras
from sklearn.datasets import load_digits

import keras_quant

out = sys.argv[1] if len(sys.argv) > 1 else "tutorial_out"
keras.utils.set_random_seed(0)
digits = load_digits()
x = (digits.images / 16.0).astype("float32").reshape(-1, 64)
y = digits.target

model = keras.Sequential(
    [
        keras.Input((64,)),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ]
)
model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])

# 1. Choose the modes every `save()` also writes (and a report).
observed = keras_quant.observe(
    model, save_modes=("int8", "float16"), save_report=True
)

# 2. An ordinary ModelCheckpoint: each save writes best.keras, then
#    best_int8.tflite, best_float16.tflite, best.quant.json and
#    best.report.html beside it.
checkpoint = keras.callbacks.ModelCheckpoint(
    os.path.join(out, "best.keras"),
    monitor="val_accuracy",
    save_best_only=True,
)
observed.fit(
    x[:1400],
    y[:1400],
    validation_data=(x[1400:], y[1400:]),
    epochs=4,
    verbose=0,
    callbacks=[keras_quant.callbacks.RangeCalibration(), checkpoint],
)
print(sorted(name for name in os.listdir(out) if name.startswith("best")))

# 3. The checkpoint carries the ranges: export again later, no data needed.
restored = keras.saving.load_model(os.path.join(out, "best.keras"))
keras_quant.export(restored, os.path.join(out, "later_int8.tflite"))
