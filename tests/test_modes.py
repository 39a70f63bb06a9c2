import keras
import pytest
import tensorflow as tf

from keras_quant import modes
from keras_quant.conversion.converter import configure
from keras_quant.modes import MODES
from keras_quant.modes import Mode
from keras_quant.options import ConvertOptions


def test_every_mode_has_a_row():
    assert set(MODES) == set(Mode)


@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
def test_strings_name_modes(mode):
    assert modes.parse_mode(mode.value) is mode
    assert modes.parse_mode(mode) is mode


@pytest.mark.parametrize("bad", ["INT8", "int4", "", None])
def test_unknown_modes_list_the_valid_ones(bad):
    with pytest.raises(ValueError, match="'float32', 'dynamic', 'int8'"):
        modes.parse_mode(bad)


def test_range_modes_are_the_integer_activation_ones():
    assert {m for m, spec in MODES.items() if spec.needs_ranges} == {
        Mode.INT8,
        Mode.INT8_ONLY,
        Mode.INT16X8,
        Mode.INT8X4,
    }


@pytest.mark.parametrize(
    "mode, block_size, accepted",
    [
        (Mode.DYNAMIC_INT4, 64, True),
        (Mode.DYNAMIC_INT4, None, True),
        (Mode.DYNAMIC_INT4, 48, False),
        (Mode.INT8X4, 32, False),
        (Mode.INT8, 32, False),
    ],
)
def test_block_sizes(mode, block_size, accepted):
    if accepted:
        assert modes.check_block_size(mode, block_size) == block_size
    else:
        with pytest.raises(ValueError, match="`block_size` applies to"):
            modes.check_block_size(mode, block_size)


@pytest.mark.parametrize(
    "mode, io_dtype, expected",
    [
        (Mode.INT8_ONLY, None, "int8"),
        (Mode.INT8_ONLY, "uint8", "uint8"),
        (Mode.INT8, None, None),
    ],
)
def test_io_dtype_defaults(mode, io_dtype, expected):
    assert modes.check_io_dtype(mode, io_dtype) == expected


def converter():
    inputs = keras.Input((2,))
    return tf.lite.TFLiteConverter.from_keras_model(
        keras.Model(inputs, keras.layers.Dense(1)(inputs))
    )


def test_converter_settings_follow_the_table():
    float16 = configure(converter(), Mode.FLOAT16)
    assert float16.optimizations == [tf.lite.Optimize.DEFAULT]
    assert float16.target_spec.supported_types == [tf.float16]
    integer = configure(
        converter(), ConvertOptions(Mode.INT8_ONLY, io_dtype="uint8")
    )
    assert integer.inference_input_type == tf.uint8
    assert integer.inference_output_type == tf.uint8
    plain = configure(converter(), Mode.FLOAT32)
    assert not plain.optimizations


def test_a_mode_prints_as_its_name():
    assert str(Mode.INT8) == "int8" and f"{Mode.INT8_ONLY}" == "int8_only"
    assert Mode("int8") == "int8"
