"""Tutorial 2: quantization-aware training, then an integer-only export.

Run: python examples/tutorials/qat.py [output folder]
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
x_train, y_train, x_val, y_val = x[:1400], y[:1400], x[1400:], y[1400:]

# 1. A float model, trained and calibrated as in tutorial 1.
inputs = keras.Input((8, 8, 1))
hidden = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
hidden = keras.layers.Dense(16, activation="relu")(
    keras.layers.Flatten()(hidden)
)
outputs = keras.layers.Dense(10)(hidden)
model = keras.Model(inputs, outputs)
loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
model.compile("adam", loss, metrics=["accuracy"])
observed = keras_quant.observe(model)
observed.fit(
    x_train,
    y_train,
    validation_data=(x_val, y_val),
    epochs=5,
    verbose=0,
    callbacks=[keras_quant.callbacks.RangeCalibration()],
)

# 2. Quantization-aware training starts from those ranges.
qat = keras_quant.quantize_aware(observed)
qat.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
qat.fit(x_train, y_train, epochs=2, verbose=0)

# 3. Export integer-only: no calibration data, the ranges are in the model.
result = keras_quant.export(
    qat,
    os.path.join(out, "digits_qat_int8_only.tflite"),
    mode="int8_only",
    validation_data=(x_val, y_val),
)
print("input/output type:", result.io_dtype)
print(f"accuracy, Keras QAT model: {result.float_metrics['accuracy']:.4f}")
print(f"accuracy, int8 LiteRT:     {result.quantized_metrics['accuracy']:.4f}")

# 4. The QAT state saves and loads with the model.
qat.save(os.path.join(out, "digits_qat.keras"))
restored = keras.saving.load_model(os.path.join(out, "digits_qat.keras"))
print(
    "restored model exports too:",
    keras_quant.export(
        restored, os.path.join(out, "restored.tflite"), "int8_only"
    ).size_bytes,
)
