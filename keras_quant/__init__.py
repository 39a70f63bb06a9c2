"""keras-quant: quantized TFLite models as a by-product of Keras training.

Typical use, in an existing training script:

    observed = keras_quant.observe(model)
    observed.fit(
        x, y, validation_data=(x_val, y_val),
        callbacks=[keras_quant.callbacks.RangeCalibration()],
    )
    keras_quant.export(observed, "model.tflite", mode="int8")
"""

import os
import sys

from keras_quant import native_stderr

# The `keras-quant` command hides TensorFlow's import-time log lines, so
# that its own messages (a one-line error, say) are all it prints.
with native_stderr.captured(os.path.basename(sys.argv[0]) == "keras-quant"):
    from keras_quant import callbacks
    from keras_quant.errors import ExportError
    from keras_quant.errors import KerasQuantError
    from keras_quant.errors import NonFiniteActivationError
    from keras_quant.errors import NotCalibratedError
    from keras_quant.errors import UnsupportedModelError
    from keras_quant.errors import UnwritablePathError
    from keras_quant.evaluation import compare
    from keras_quant.exporter import ExportResult
    from keras_quant.exporter import export
    from keras_quant.litert import run as run_tflite
    from keras_quant.modes import Mode
    from keras_quant.observed_model import ObservedModel
    from keras_quant.observed_model import observe
    from keras_quant.observed_model import reset_ranges
    from keras_quant.placement import find_points
    from keras_quant.qat import quantize_aware
    from keras_quant.report import write_report
    from keras_quant.sensitivity import Sensitivity
    from keras_quant.sensitivity import analyze

__version__ = "0.1.0"

__all__ = [
    "ExportError",
    "ExportResult",
    "KerasQuantError",
    "Mode",
    "NonFiniteActivationError",
    "NotCalibratedError",
    "ObservedModel",
    "Sensitivity",
    "UnsupportedModelError",
    "UnwritablePathError",
    "analyze",
    "callbacks",
    "compare",
    "export",
    "find_points",
    "observe",
    "quantize_aware",
    "reset_ranges",
    "run_tflite",
    "write_report",
]
