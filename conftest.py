"""Shared pytest set-up: quiet TensorFlow, two logical CPUs, doctest names."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices, so tf.distribute.MirroredStrategy has two
# replicas to compare with one device. Must happen before TF starts.
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu,
    [
        tf.config.LogicalDeviceConfiguration(),
        tf.config.LogicalDeviceConfiguration(),
    ],
)

import keras  # noqa: E402

import keras_quant  # noqa: E402


@pytest.fixture(autouse=True)
def _doctest_names(request, tmp_path):
    if isinstance(request.node, pytest.DoctestItem):
        namespace = request.getfixturevalue("doctest_namespace")
        namespace.update(
            keras=keras,
            keras_quant=keras_quant,
            np=np,
            tmp_dir=str(tmp_path),
        )
