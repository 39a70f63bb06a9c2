"""Tutorial 5: an integer-only model for a microcontroller, run in TFLM.

Run: python examples/tutorials/microcontroller.py [output folder]
Needs the `[micro]` extra: pip install 'keras-quant[micro]'.
"""

import os
import sys

import keras_quant.quiet  # noqa: F401  TensorFlow's start-up lines, hidden

# isort: split
import keras
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import keras_quant
from keras_quant.runtime import edgetpu

out = sys.argv[1] if len(sys.argv) > 1 else "tutorial_out"
keras.utils.set_random_seed(0)

# 1. Data: scikit-learn's 8x8 handwritten digits, scaled to [0, 1].
digits = load_digits()
x = (digits.images / 16.0).astype("float32")[..., np.newaxis]
x_train, x_val, y_train, y_val = train_test_split(
    x, digits.target, test_size=0.25, random_state=0
)

# 2. A small model with a GELU, which TFLM has no kernel for. The batch
#    size stays free: the export for "micro" fixes it at 1.
inputs = keras.Input((8, 8, 1))
h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
h = keras.layers.MaxPooling2D()(h)
h = keras.layers.Flatten()(h)
h = keras.layers.Dense(32)(h)
h = keras.layers.LayerNormalization()(h)
h = keras.layers.Activation("gelu")(h)
outputs = keras.layers.Dense(10, activation="softmax")(h)
model = keras.Model(inputs, outputs)
model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])

# 3. Observe it and train; ranges come from the last validation run.
observed = keras_quant.observe(model)
observed.fit(
    x_train,
    y_train,
    validation_data=(x_val, y_val),
    epochs=5,
    verbose=0,
    callbacks=[keras_quant.callbacks.RangeCalibration()],
)

# 4. Export integer-only for TensorFlow Lite for Microcontrollers. The
#    file is run in the TFLM interpreter on the validation data before
#    it is written.
result = keras_quant.export(
    observed,
    os.path.join(out, "digits_micro.tflite"),
    mode="int8_only",
    target="micro",
    validation_data=(x_val, y_val),
)
micro = result.micro
print(f"{result.size_bytes / 1024:.1f} KB, ops: {', '.join(micro.ops)}")
print(f"tensor arena: {micro.arena_bytes:,} bytes")
print(
    f"accuracy: Keras {result.float_metrics['accuracy']:.4f}, "
    f"LiteRT {result.quantized_metrics['accuracy']:.4f}, "
    f"TFLM {micro.metrics['accuracy']:.4f}"
)
print(
    f"TFLM against LiteRT: at most {micro.max_step_difference} step(s), "
    f"on {100 * micro.differing_share:.2f}% of the outputs"
)

# 5. The same file against Coral's Edge TPU requirements: a static
#    pre-check (no compiler runs here).
print(edgetpu.precheck(result.path).text())
