"""A step that crashes natively costs an ExportError, not the process."""

import ctypes
import os

import pytest

from keras_quant.conversion import engine
from keras_quant.conversion.isolation import run_isolated
from keras_quant.errors import ExportError


def test_a_native_crash_becomes_an_export_error_and_this_process_lives():
    with pytest.raises(ExportError, match="SIGSEGV; this process is unharmed"):
        run_isolated(ctypes.string_at, 0)  # reads address 0: a real segfault
    assert run_isolated(sum, [1, 2]) == 3  # and the next call works


def test_an_abort_is_named_with_its_signal():
    with pytest.raises(ExportError, match="SIGABRT"):
        run_isolated(os.abort)


def test_the_functions_own_error_is_raised_again():
    with pytest.raises(ExportError, match="not a TFLite model"):
        run_isolated(engine.quantize, b"not a model", {}, None, "int8")
