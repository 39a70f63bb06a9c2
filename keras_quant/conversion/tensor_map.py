"""Which TFLite tensor each observed range belongs to.

The float model is converted from `graphs.scoped_float_graph`, where op
`i` runs in name scope `kq_op<i>` (`scopes`); a TFLite tensor's name
starts with the scope of the op that computes it (fused ops are joined by
`;`, the last one first). The last tensor with a part in an op's scope
is that op's output, which takes the range of the observer after the op,
if the op computes it: when TFLite fuses the op's last step into a later
op's (a BatchNormalization that does not fold ends in an ADD, fused with
the ReLU after it), that tensor is the later op's output and takes its
observer's range, and the op's own observer describes no tensor of the
file. Model inputs and outputs are matched by position. Tensors inside a
layer (LayerNormalization's mean, attention scores, the MUL of a
BatchNormalization that does not fold, ...) match no observer: the engine
finds their ranges by replay.
"""

from keras_quant.conversion import engine
from keras_quant.conversion import scopes
from keras_quant.conversion.graphs import layer_name
from keras_quant.graph import trace as graph_lib
from keras_quant.observation.observers import Observer
from keras_quant.runtime import flatbuffer
from keras_quant.runtime import litert


def scopes_with_ops(float_tflite):
    """The scope numbers that some op's output tensor names."""
    return {
        number
        for name in _op_output_names(float_tflite)
        for number in scopes.numbers(name)
    }


def observed_ranges(float_tflite, model, ops):
    """`{tensor name: (min, max)}` for every observed tensor.

    Args:
        float_tflite: the float model converted from `scoped_float_graph`.
        model: the observed (or QAT) model it was built from.
        ops: the ops of `scoped_float_graph`, by scope number.
    """
    graph = graph_lib.trace(model)
    after = _observer_after(graph)
    runner = litert.interpreter(float_tflite)
    outputs = {}
    for name in _op_output_names(float_tflite):
        for number in scopes.numbers(name):
            outputs[number] = name
    # An op's last tensor named first by a later op's scope is that op's
    # output: the earlier op's output is fused into it (an unfolded
    # BatchNormalization's ADD into the next ReLU). Giving the earlier
    # op's range to its last tensor of its own would give an inner tensor
    # (the BatchNormalization's MUL) the range of the layer's output.
    outputs = {
        number: name
        for number, name in outputs.items()
        if scopes.first_number(name) == number
    }
    # An op computing a model output may end outside its scope (TensorFlow
    # names outputs `Identity`): its last scoped tensor is then an inner
    # one. Outputs are matched by position below instead.
    final = {id(_producer(graph, key)) for key in graph.outputs}
    ranges = {}
    for index, name in outputs.items():
        op = ops[index] if index < len(ops) else None
        observer = None if op is None else after.get(id(op))
        if observer is not None and id(op) not in final:
            ranges[name] = observer.range()
    ends = [
        (runner.get_input_details(), graph.inputs, _observer_of_input),
        (litert.output_details(runner), graph.outputs, _observer_of_output),
    ]
    for details, keys, find in ends:
        for detail, key in zip(details, keys):
            observer = find(graph, key)
            if observer is not None:
                ranges[detail["name"]] = observer.range()
    return ranges


def _observer_after(graph):
    """`{id(op): the Observer reading its output}`."""
    after = {}
    for op in graph.ops:
        if isinstance(op.layer, Observer):
            producer = graph.producer(op.inputs[0])
            if producer is not None:
                after[id(producer)] = op.layer
    return after


def _observer_of_input(graph, key):
    for op in graph.consumers(key):
        if isinstance(op.layer, Observer):
            return op.layer
    return None


def _observer_of_output(graph, key):
    producer = graph.producer(key)
    if producer is not None and isinstance(producer.layer, Observer):
        return producer.layer
    return None


def _op_output_names(tflite):
    """The first output tensor name of each op of the main graph, in op
    order."""
    model = flatbuffer.read(tflite)
    subgraph = model.subgraphs[0]
    names = []
    for op in subgraph.operators:
        if len(op.outputs):
            name = subgraph.tensors[op.outputs[0]].name
            names.append(flatbuffer.tensor_name(name))
    return names


def output_patterns(float_tflite, model, layers):
    """`{layer: regular expression}` naming the model outputs computed by
    `layers`: TensorFlow names a function's outputs `Identity`, ...,
    outside every scope, so a layer kept float needs its output named too."""
    graph = graph_lib.trace(model)
    runner = litert.interpreter(float_tflite)
    patterns = {}
    for detail, key in zip(litert.output_details(runner), graph.outputs):
        producer = _producer(graph, key)
        if producer is not None and layer_name(producer.layer) in layers:
            name = layer_name(producer.layer)
            patterns[name] = engine.output_named(detail["name"])
    return patterns


def _producer(graph, key):
    """The op computing `key`, looking through observers."""
    producer = graph.producer(key)
    while producer is not None and isinstance(producer.layer, Observer):
        producer = graph.producer(producer.inputs[0])
    return producer
