"""tensorflow-model-optimization interop, run in its own process.

Importing tfmot switches TensorFlow to legacy Keras, so
`tests/test_tfmot_interop.py` runs this script in a fresh interpreter and
reads the JSON it prints as its last line.
"""

import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import keras_quant  # noqa: E402
from keras_quant.runtime import inspection  # noqa: E402


def digits():
    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    return x[:1200], data.target[:1200], x[1200:], data.target[1200:]


def tfmot_model():
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential(
        [
            tf_keras.Input((8, 8, 1)),
            tf_keras.layers.Conv2D(8, 3, activation="relu"),
            tf_keras.layers.Flatten(),
            tf_keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model = tfmot.quantization.keras.quantize_model(model)
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    return model


def error_of(call):
    try:
        call()
    except keras_quant.KerasQuantError as error:
        return type(error).__name__
    return None


def main(folder):
    x, y, x_test, y_test = digits()
    model = tfmot_model()
    export = keras_quant.callbacks.TFLiteExport(
        os.path.join(folder, "cb_{mode}.tflite"), modes=("int8_only",)
    )
    model.fit(x, y, epochs=2, verbose=0, callbacks=[export])
    result = keras_quant.export(
        model,
        os.path.join(folder, "m.tflite"),
        "int8_only",
        validation_data=(x_test, y_test),
        report_dir=os.path.join(folder, "report"),
    )
    summary = inspection.summarize(result.path)
    tensors = summary.tensors
    plain = tf_keras.Sequential(
        [tf_keras.Input((3,)), tf_keras.layers.Dense(2)]
    )
    return {
        "callback_files": sorted(os.listdir(folder)),
        "report_files": sorted(os.listdir(os.path.join(folder, "report"))),
        "io": [tensors[i].dtype for i in summary.inputs + summary.outputs],
        "float_ops": summary.float_ops(),
        "metrics": [result.float_metrics, result.quantized_metrics],
        "int16x8": error_of(
            lambda: keras_quant.export(
                model, os.path.join(folder, "x.tflite"), "int16x8"
            )
        ),
        "plain_int8": error_of(
            lambda: keras_quant.export(
                plain, os.path.join(folder, "p.tflite"), "int8"
            )
        ),
        "plain_float16": keras_quant.export(
            plain, os.path.join(folder, "p16.tflite"), "float16"
        ).size_bytes
        > 0,
    }


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        print(json.dumps(main(sys.argv[1] if len(sys.argv) > 1 else folder)))
