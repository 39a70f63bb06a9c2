import keras
import pytest
from keras import layers

from keras_quant.graph import placement


def names(model):
    return [point.name for point in placement.find_points(model)]


def model_of(*stack, shape=(8, 8, 1)):
    inputs = keras.Input(shape, name="x")
    value = inputs
    for layer in stack:
        value = layer(value)
    return keras.Model(inputs, value)


def test_conv_bn_relu_is_one_fused_group():
    model = model_of(
        layers.Conv2D(4, 3, name="conv"),
        layers.BatchNormalization(name="bn"),
        layers.ReLU(name="relu"),
    )
    assert names(model) == ["x", "relu"]


def test_fused_activation_argument_ends_the_group():
    model = model_of(
        layers.Conv2D(4, 3, activation="relu", name="conv"),
        layers.BatchNormalization(name="bn"),
    )
    # ReLU inside the conv: BN can no longer fold, so it is split in two ops.
    assert names(model) == ["x", "conv", "bn/bn_scale", "bn"]


def test_relu6_fuses_but_other_relus_do_not():
    fused = model_of(layers.Dense(4, name="d"), layers.ReLU(6.0, name="r"))
    leaky = model_of(
        layers.Dense(4, name="d"), layers.ReLU(negative_slope=0.1, name="r")
    )
    assert names(fused) == ["x", "r"]
    assert names(leaky) == ["x", "d", "r"]


def test_same_scale_layers_inherit_their_input_range():
    model = model_of(
        layers.Conv2D(4, 3, activation="relu", name="conv"),
        layers.MaxPooling2D(name="pool"),
        layers.Dropout(0.5, name="drop"),
        layers.Flatten(name="flat"),
    )
    assert names(model) == ["x", "conv"]


@pytest.mark.parametrize(
    "activation, fixed",
    [
        ("softmax", placement.SIGMOID_RANGE),
        ("sigmoid", placement.SIGMOID_RANGE),
        ("tanh", placement.TANH_RANGE),
        ("gelu", None),
    ],
)
def test_unfusable_activation_splits_the_layer(activation, fixed):
    model = model_of(
        layers.Dense(3, activation=activation, name="d"), shape=(4,)
    )
    points = placement.find_points(model)
    assert [p.name for p in points] == ["x", "d/pre_activation", "d"]
    assert points[1].part == "pre_activation"
    assert points[2].fixed_range == fixed


def test_separable_conv_exposes_its_depthwise_output():
    model = model_of(layers.SeparableConv2D(4, 3, name="sep"))
    assert names(model) == ["x", "sep/depthwise", "sep"]


def test_tensor_read_twice_is_not_fused():
    inputs = keras.Input((4,), name="x")
    hidden = layers.Dense(4, name="d")(inputs)
    outputs = layers.Add(name="add")([layers.ReLU(name="r")(hidden), hidden])
    assert names(keras.Model(inputs, outputs)) == ["x", "d", "r", "add"]


def test_residual_add_fuses_relu_and_branches_get_ranges():
    inputs = keras.Input((8, 8, 1), name="x")
    a = layers.Conv2D(4, 3, padding="same", activation="relu", name="a")(inputs)
    b = layers.Conv2D(4, 3, padding="same", name="b")(a)
    b = layers.BatchNormalization(name="bn")(b)
    added = layers.ReLU(name="relu")(layers.Add(name="add")([a, b]))
    joined = layers.Concatenate(name="cat")([added, a])
    pooled = layers.GlobalAveragePooling2D(name="gap")(joined)
    model = keras.Model(inputs, pooled)
    assert names(model) == ["x", "a", "bn", "relu", "cat", "gap"]


def test_integer_inputs_get_no_range():
    inputs = keras.Input((5,), dtype="int32", name="tokens")
    embedded = layers.Embedding(10, 4, name="embed")(inputs)
    model = keras.Model(inputs, layers.Flatten()(embedded))
    assert names(model) == ["embed"]
