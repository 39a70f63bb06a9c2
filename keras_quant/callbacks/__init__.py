"""Keras callbacks of keras-quant, mirroring `keras.callbacks`."""

from keras_quant.callbacks.range_calibration import RangeCalibration
from keras_quant.callbacks.tflite_export import TFLiteExport

__all__ = ["RangeCalibration", "TFLiteExport"]
