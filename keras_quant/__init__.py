"""keras-quant: quantized TFLite models as a by-product of Keras training.

Typical use, in an existing training script:

    observed = keras_quant.observe(model)
    observed.fit(
        x, y, validation_data=(x_val, y_val),
        callbacks=[keras_quant.callbacks.RangeCalibration()],
    )
    keras_quant.export(observed, "model.tflite", mode="int8")

`import keras_quant` is cheap: it imports neither Keras nor TensorFlow.
Each public name loads its module on first use (`_PUBLIC`), and
keras-quant's layers are registered with Keras as soon as Keras itself is
imported, so a saved `.keras` file loads with no `custom_objects`.
"""

import importlib

from keras_quant import _registration
from keras_quant.errors import ExportError
from keras_quant.errors import KerasQuantError
from keras_quant.errors import NonFiniteActivationError
from keras_quant.errors import NotCalibratedError
from keras_quant.errors import UnsupportedModelError
from keras_quant.errors import UnwritablePathError
from keras_quant.modes import Mode

__version__ = "0.1.0"

# Public name -> (module, attribute); attribute None is the module itself.
_PUBLIC = {
    "ExportResult": ("keras_quant.exporting.result", "ExportResult"),
    "ObservedModel": (
        "keras_quant.observation.observed_model",
        "ObservedModel",
    ),
    "Sensitivity": ("keras_quant.measurement.sensitivity", "Sensitivity"),
    "analyze": ("keras_quant.measurement.sensitivity", "analyze"),
    "callbacks": ("keras_quant.callbacks", None),
    "compare": ("keras_quant.measurement.evaluation", "compare"),
    "export": ("keras_quant.exporting.api", "export"),
    "export_many": ("keras_quant.exporting.api", "export_many"),
    "find_points": ("keras_quant.graph.placement", "find_points"),
    "observe": ("keras_quant.observation.observed_model", "observe"),
    "quantize_aware": ("keras_quant.observation.qat", "quantize_aware"),
    "reset_ranges": ("keras_quant.observation.observed_model", "reset_ranges"),
    "run_tflite": ("keras_quant.runtime.litert", "run"),
    "strip_samples": ("keras_quant.exporting.save_hook", "strip_samples"),
    "write_report": ("keras_quant.exporting.report", "write_report"),
}

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
    "export_many",
    "find_points",
    "observe",
    "quantize_aware",
    "reset_ranges",
    "run_tflite",
    "strip_samples",
    "write_report",
]


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'keras_quant' has no attribute {name!r}")
    module_name, attribute = _PUBLIC[name]
    _registration.register()
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__():
    return __all__


_registration.register_when_keras_loads()
