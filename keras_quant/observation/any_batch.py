"""One trace of `predict` for batches of any size (TensorFlow backend).

Keras's TensorFlow `predict` calls its `tf.function` with each batch, so
it traces twice when the last batch is smaller than the others (200
inputs in batches of 32 end with one of 8): once for the first batch's
shape, once more, with the batch dimension relaxed, for the last. An
observed model's trace costs more than a plain model's (its observers'
reductions and their update), so the second trace weighs more.

`trace_for_any_batch` traces the relaxed function before the first batch
runs, from that batch's structure with the batch dimension unknown;
TensorFlow then dispatches every batch to it, whatever its size
(decision D45). Training and evaluation need nothing of the kind: their
steps read the batches from an iterator inside the `tf.function`, whose
batch dimension is already unknown.

Example:

>>> import tensorflow as tf
>>> traced = []
>>> @tf.function(reduce_retracing=True)
... def double(x):
...     traced.append(x.shape)
...     return 2 * x
>>> double = trace_for_any_batch(double)
>>> _ = double(tf.ones((32, 3)))
>>> _ = double(tf.ones((8, 3)))
>>> traced
[TensorShape([None, 3])]
"""

import keras


def trace_for_any_batch(function):
    """`function` (a `tf.function` of one batch structure) that, at its
    first call, traces for that structure with the batch dimension
    unknown, so that later batches of any size reuse the trace.

    Falls back to `function`'s own tracing when the structure holds
    anything but dense tensors (distributed values, ragged or sparse
    tensors, Python values), or when the model cannot be traced without
    a batch size (a layer that computes with `x.shape[0]`): such a model
    predicts as Keras predicts it.
    """
    import tensorflow as tf

    if not isinstance(function, tf.types.experimental.PolymorphicFunction):
        return function
    state = {"traced": False}

    def call(*args):
        if not state["traced"]:
            state["traced"] = True
            _trace_relaxed(function, args)
        return function(*args)

    return call


def _trace_relaxed(function, args):
    specs = _any_batch_specs(args)
    if specs is None:
        return
    try:
        function.get_concrete_function(*specs)
    except (TypeError, ValueError):
        # A layer needs the batch size; any real error comes back from
        # the trace with the batch's own shape, as Keras makes it.
        pass


def _any_batch_specs(args):
    """`args` as `tf.TensorSpec`s with the batch dimension unknown, or
    None if a leaf is not a dense tensor with a batch dimension."""
    import tensorflow as tf

    # (ragged and sparse tensors are not `tf.Tensor`s)
    batched = (
        isinstance(leaf, tf.Tensor) and leaf.shape.rank
        for leaf in keras.tree.flatten(args)
    )
    if not all(batched):
        return None
    return keras.tree.map_structure(
        lambda t: tf.TensorSpec((None, *t.shape[1:]), t.dtype), args
    )
