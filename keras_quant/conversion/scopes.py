"""The numbered name scopes of the engine's float graph, and their removal.

`graphs.scoped_float_graph` runs op `i` in TensorFlow name scope
`kq_op<i>` (`name(i)`), so that each TFLite tensor name tells which traced
op computed it (`tensor_map`). The scopes are bookkeeping: once the engine
has quantized the model, `without_scopes` takes them out of the tensor
names, so that the exported file names its tensors as a plain conversion
of the model does (`dense_3/Relu`), and carries no bytes for them.

>>> name(7)
'kq_op7'
>>> numbers("model/kq_op7_1/dense/Relu;model/kq_op7_1/dense/BiasAdd")
[7, 7]
>>> unscoped("model/kq_op7_1/dense/Relu;model/kq_op7_1/dense/BiasAdd")
'model/dense/Relu;model/dense/BiasAdd'
"""

import re

from keras_quant.runtime import flatbuffer

_FORMAT = "kq_op{}"
# A scope as TensorFlow writes it: `kq_op7/`, or `kq_op7_1/` when entered
# again; at the start of a name or after `/` or `;`.
_SCOPE = re.compile(r"(?:^|(?<=[/;]))kq_op(\d+)(?:_\d+)?/")


def name(index):
    """The name scope of op `index` of the scoped float graph."""
    return _FORMAT.format(index)


def numbers(tensor_name):
    """The op numbers of the scopes in `tensor_name`, in order."""
    return [int(number) for number in _SCOPE.findall(tensor_name)]


def first_number(tensor_name):
    """The op number of the first `;`-part of `tensor_name` (the op that
    computes the tensor), or None if that part is unscoped."""
    found = numbers(tensor_name.split(";")[0])
    return found[0] if found else None


def pattern(index):
    """A regular expression matching the ops with a part computed inside
    op `index`'s scope: any of the `;`-joined names of their output tensor
    (a fused Conv + BatchNormalization + ReLU is one op, float if any part
    is)."""
    return rf"(^|[/;]){re.escape(name(index))}(_\d+)?/"


def unscoped(tensor_name):
    """`tensor_name` with every scope taken out."""
    return _SCOPE.sub("", tensor_name)


def without_scopes(tflite):
    """The `.tflite` bytes with the scopes taken out of its tensor names.

    A name that would then be shared by two tensors of one graph keeps its
    scope: tensor names stay unique.
    """
    model = flatbuffer.read(tflite)
    changed = False
    for subgraph in model.subgraphs:
        names = [flatbuffer.tensor_name(t.name) for t in subgraph.tensors]
        plain = [unscoped(n) for n in names]
        for tensor, old, new in zip(subgraph.tensors, names, plain):
            if new != old and plain.count(new) == 1 and new not in names:
                tensor.name = new.encode()
                changed = True
    return flatbuffer.write(model) if changed else tflite
