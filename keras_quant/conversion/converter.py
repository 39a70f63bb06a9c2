"""The TFLite converter, set up for one mode and kept quiet.

`frozen_function` freezes a Keras model's serving function in memory
(decision D13); `run_frozen` hands it to `tf.lite.TFLiteConverter` with
a row of `modes.MODES` applied (`configure`) and turns the converter's
failures into `ExportError`, so several modes share one frozen function;
`run_converter` does both steps for one model.
"""

import contextlib
import io
import logging
import warnings

import keras
import tensorflow as tf

from keras_quant import native_stderr
from keras_quant._compat import keras_internals
from keras_quant._compat.tensorflow_internals import ConverterError
from keras_quant._compat.tensorflow_internals import freeze
from keras_quant.errors import ExportError
from keras_quant.modes import MODES
from keras_quant.options import ConvertOptions


def run_converter(keras_model, options, for_mode=None):
    """Converts a plain Keras model (no observers) with `options` (a
    `ConvertOptions`): its mode's settings, and static shapes where its
    target needs them. A mode stands for its default options.

    `for_mode` is the mode the caller was asked for, named in an error
    when this conversion is a step towards it (the engine's float
    model); defaults to `options.mode`.
    """
    options = ConvertOptions.of(options)
    frozen = frozen_function(keras_model, options.static_batch)
    return run_frozen(frozen, options, for_mode)


def run_frozen(frozen, options, for_mode=None):
    """`run_converter` on a `frozen_function` already made: several
    modes of one model share its tracing and freezing."""
    options = ConvertOptions.of(options)
    try:
        with quiet():  # from_concrete_functions warns of its own API
            converter = tf.lite.TFLiteConverter.from_concrete_functions(
                [frozen]
            )
            configure(converter, options)
            return converter.convert()
    except ConverterError as error:
        reason = str(error).strip().splitlines()[0]
        raise ExportError(
            f"The TFLite converter cannot convert this model (mode "
            f"{(for_mode or options.mode).value!r}): {reason}"
        ) from error


def frozen_function(keras_model, static_batch=False):
    """`keras_model`'s serving function, traced and frozen.

    `from_keras_model` writes and reads back a SavedModel first; freezing
    the serving function in memory gives the same model in about a third
    of the time (0.11 s against 0.35 s on the demo model).

    With `static_batch`, an input whose batch size the model leaves free
    is traced with batch 1, so the file's shapes are all fixed (TFLM
    needs them; a free batch also costs ops such as REDUCE_PROD around
    reshapes).
    """

    @tf.function
    def serve(*inputs):
        structured = keras.tree.pack_sequence_as(
            keras_internals.inputs_structure(keras_model), list(inputs)
        )
        return keras_model(structured, training=False)

    specs = [
        tf.TensorSpec(
            _shape(tensor.shape, static_batch),
            tensor.dtype,
            name=_input_name(tensor),
        )
        for tensor in keras_model.inputs
    ]
    with quiet():  # freezing runs Grappler, which logs its session
        return freeze(serve.get_concrete_function(*specs))


def _shape(shape, static_batch):
    """`shape` with a free batch size set to 1 if `static_batch`."""
    if static_batch and shape[0] is None:
        return (1, *shape[1:])
    return shape


def _input_name(tensor):
    return keras_internals.producer_name(tensor)


@contextlib.contextmanager
def quiet():
    """Silences the converter's prints, warnings and absl log lines.

    Among them: absl's note that a concrete function converted without its
    trackable object takes the "deprecated conversion path" (decision D13),
    and the quantizer's "fully_quantize: ..." line on native stderr.
    """
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with (
                contextlib.redirect_stdout(io.StringIO()),
                native_stderr.captured(),
            ):
                yield
    finally:
        absl.setLevel(level)


def configure(converter, options):
    """Applies the settings of `options`' mode to a
    `tf.lite.TFLiteConverter` (a mode stands for its default options)."""
    options = ConvertOptions.of(options)
    spec = MODES[options.mode]
    if spec.optimize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if spec.supported_types:
        converter.target_spec.supported_types = [
            tf.dtypes.as_dtype(name) for name in spec.supported_types
        ]
    if spec.integer_io:
        converter.inference_input_type = tf.dtypes.as_dtype(options.io_dtype)
        converter.inference_output_type = tf.dtypes.as_dtype(options.io_dtype)
    return converter
