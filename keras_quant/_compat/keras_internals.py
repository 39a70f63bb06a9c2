"""Private parts of Keras 3 that keras-quant reads.

A Functional model's node graph (`_nodes_by_depth`, `_inputs_struct`,
`_outputs_struct`), the history of a symbolic tensor (`_keras_history`),
the Functional model behind a Sequential one (`_functional`), a layer's
sub-layers (`_flatten_layers`), `Dense`/`Conv` kernels as stored
(`_kernel`, which a LoRA or quantized layer wraps), and a metric's
direction (`_direction`).
"""

from keras_quant._compat import versions

versions.check("keras")

try:
    from keras.src.models.functional import Functional
except ImportError as error:  # pragma: no cover - depends on Keras
    raise versions.broken("keras.src.models.functional", error) from error

__all__ = ["Functional"]


def nodes_by_depth(functional):
    """`{depth: [Node]}` of a Functional model (0 = outputs)."""
    return functional._nodes_by_depth


def io_structures(functional):
    """The nested structures of a Functional model's inputs and outputs."""
    return functional._inputs_struct, functional._outputs_struct


def inputs_structure(model):
    """The nested structure of a Functional model's inputs."""
    return model._inputs_struct


def functional_of(model):
    """The Functional model behind a built Sequential model, or None."""
    return getattr(model, "_functional", None)


def producer_name(tensor):
    """The name of the operation (layer) that produced a symbolic tensor."""
    return tensor._keras_history.operation.name


def producer_inputs(tensor):
    """The symbolic input tensors of the call that produced `tensor`."""
    operation, node_index, _ = tensor._keras_history
    return list(operation._inbound_nodes[node_index].input_tensors)


def sublayers(model):
    """Every layer inside `model`, nested ones included."""
    return model._flatten_layers(include_self=False, recursive=True)


def metric_direction(metric):
    """`"up"` or `"down"` if the metric says which way is better, else
    None (Keras's `EarlyStopping(mode="auto")` reads the same)."""
    return getattr(metric, "_direction", None)


def is_compiled(model):
    """Whether `model` was compiled: Keras 3 says `compiled`, tf_keras
    (tfmot models) `_is_compiled`."""
    return bool(
        getattr(model, "compiled", getattr(model, "_is_compiled", False))
    )


# The attribute `Dense` and `Conv` layers keep their kernel variable under;
# their public `kernel` property may wrap it (LoRA, quantized layers), and
# quantization-aware training swaps the stored one.
STORED_KERNEL = "_kernel"
