import keras
import pytest
from keras import layers

from keras_quant.errors import UnsupportedModelError
from keras_quant.graph import trace as graph
from tests.conftest import nested_cnn


def test_nested_paths_follow_model_names():
    traced = graph.trace(nested_cnn())
    prefixes = [op.path.split("/")[0] for op in traced.ops]
    assert prefixes[:3] == ["features"] * 3
    assert prefixes[3:6] == ["head"] * 3
    assert "/" not in traced.ops[-1].path


def test_inlined_graph_connects_through_nested_boundaries():
    traced = graph.trace(nested_cnn())
    relu, pool = traced.ops[2], traced.ops[3]
    assert pool.inputs == relu.outputs
    assert traced.consumers(relu.outputs[0]) == [pool]
    assert traced.producer(pool.inputs[0]) is relu


def test_replay_reproduces_the_model(digits):
    model = nested_cnn()
    traced = graph.trace(model)
    inputs = keras.Input((8, 8, 1))
    rebuilt = keras.Model(inputs, traced.replay([inputs])[0])
    x = digits["test"][0][:16]
    assert rebuilt.count_params() == model.count_params()
    assert keras.ops.convert_to_numpy(rebuilt(x) - model(x)).max() == 0


def test_shared_layer_calls_get_distinct_paths():
    inputs = keras.Input((4,))
    shared = layers.Dense(4, name="shared")
    outputs = shared(shared(inputs))
    traced = graph.trace(keras.Model(inputs, outputs))
    assert [op.path for op in traced.ops] == ["shared", "shared@1"]


def test_subclassed_model_is_rejected_with_a_way_out():
    class Custom(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(UnsupportedModelError, match="Functional API"):
        graph.trace(Custom())


def test_sequential_without_input_shape_is_rejected():
    model = keras.Sequential([layers.Dense(2)])
    with pytest.raises(UnsupportedModelError, match="keras.Input"):
        graph.trace(model)


@pytest.mark.parametrize(
    "thing", [None, "model.keras", object()], ids=["None", "path", "object"]
)
def test_non_keras_object_is_rejected(thing):
    with pytest.raises(UnsupportedModelError, match="Expected a Keras 3 model"):
        graph.trace(thing)


def test_a_model_is_traced_once_until_its_layers_change():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    first = graph.trace(model)
    assert graph.trace(model) is first
    model.add(keras.layers.Dense(1))
    again = graph.trace(model)
    assert again is not first
    assert len(again.ops) == len(first.ops) + 1
    assert again.consumers(again.ops[0].outputs[0]) == [again.ops[1]]
