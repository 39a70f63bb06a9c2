"""Import this first to keep TensorFlow's start-up log lines off stderr.

TensorFlow 2.21 writes a dozen lines from C++ when it is imported and
when it first looks for devices (oneDNN, CUDA drivers, CPU features, a
`cuInit` error on a machine without a GPU); `TF_CPP_MIN_LOG_LEVEL` no
longer hides them. keras-quant hides what native code prints during its
own work (conversion, LiteRT), but these lines come before it. A script
that wants a quiet terminal starts with:

    import keras_quant.quiet  # noqa: F401

    # isort: split
    import keras

Importing this module imports TensorFlow and Keras and initializes the
devices with file descriptor 2 captured; what was captured is shown if
that fails. Python warnings are not touched. Without this import nothing
changes: keras-quant changes no logging of its users (decision D22).
"""

from keras_quant import native_stderr

with native_stderr.captured():
    import keras  # noqa: F401
    import tensorflow as tf

    tf.config.list_logical_devices()  # the device search logs here
