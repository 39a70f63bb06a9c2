"""Tutorial 1: an image classifier, quantized from its validation ranges.

Run: python examples/tutorials/ptq_image_classification.py [output folder]
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

out = sys.argv[1] if len(sys.argv) > 1 else "tutorial_out"
keras.utils.set_random_seed(0)

# 1. Data: scikit-learn's 8x8 handwritten digits, scaled to [0, 1].
digits = load_digits()
x = (digits.images / 16.0).astype("float32")[..., np.newaxis]
x_train, x_val, y_train, y_val = train_test_split(
    x, digits.target, test_size=0.25, random_state=0
)

# 2. An ordinary Keras model.
model = keras.Sequential(
    [
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ]
)
model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])

# 3. Observe it: observers sit where TFLite will quantize.
observed = keras_quant.observe(model)

# 4. Train as usual; ranges come from the last validation run.
observed.fit(
    x_train,
    y_train,
    validation_data=(x_val, y_val),
    epochs=5,
    verbose=0,
    callbacks=[keras_quant.callbacks.RangeCalibration()],
)

# 5. Export int8 and check it against float on the validation data.
result = keras_quant.export(
    observed,
    os.path.join(out, "digits_int8.tflite"),
    mode="int8",
    validation_data=(x_val, y_val),
)
print(f"{result.size_bytes / 1024:.1f} KB, {result.size_ratio:.2f} of float32")
print(f"accuracy drop: {100 * result.metric_drop('accuracy'):+.2f} points")

# 6. Run the .tflite file in LiteRT.
probabilities = keras_quant.run_tflite(result.path, x_val[:5])
print("predicted:", probabilities.argmax(-1), "true:", y_val[:5])
