"""Private parts of Keras 3 that keras-quant reads.

A Functional model's node graph (`_nodes_by_depth`, `_inputs_struct`,
`_outputs_struct`), the history of a symbolic tensor (`_keras_history`),
the Functional model behind a Sequential one (`_functional`), a layer's
sub-layers (`_flatten_layers`), `Dense`/`Conv` kernels as stored
(`_kernel`, which a LoRA or quantized layer wraps), a metric's
direction (`_direction`), and the two steps of Keras's TensorFlow trainer
that fail under `tf.distribute.MultiWorkerMirroredStrategy`
(`fix_multi_worker_training`).
"""

import warnings

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


# The Keras releases whose TensorFlow trainer `fix_multi_worker_training`
# was read on; its two functions are the same in all of them.
MULTI_WORKER_FIX_CHECKED = ((3, 12), (3, 15))

_multi_worker_fix = []  # the replaced originals, once the fix is in


def fix_multi_worker_training():
    """Lets Keras 3's `fit` and `evaluate` run under a multi-worker
    `tf.distribute.MultiWorkerMirroredStrategy` (keras-team/keras#20585).

    Two steps of Keras's TensorFlow trainer (module
    `keras.src.backend.tensorflow.trainer`) fail there:

    - `TensorFlowTrainer._maybe_symbolic_build` averages the first input
      batch across workers (`strategy.reduce("MEAN", batch)`) only to
      learn its shapes, and the collective strategy cannot reduce an
      `(x, y)` structure: `ValueError: Attempt to convert a value
      (PerReplica...) with an unsupported type`. Fixed: it builds from
      this worker's own first batch (same shapes, no collective).
    - `reduce_per_replica(..., reduction="auto")`, which averages the
      step's logs across replicas, reduces along axis 0 on several workers,
      and the logs are scalars: `ValueError: Invalid reduction dimension 0
      for input with 0 dimensions`. Fixed: the mean across replicas
      (`axis=None`), what it computes on one worker.

    Both replacements hand everything else to the originals, so nothing
    changes outside a multi-worker strategy. Idempotent. Applied only on
    the Keras releases it was read on (`MULTI_WORKER_FIX_CHECKED`); on
    another it warns and changes nothing.

    Returns:
        Whether the fix is in place.
    """
    if _multi_worker_fix:
        return True
    found = versions.installed("keras")
    low, high = MULTI_WORKER_FIX_CHECKED
    if found is None or not low <= found <= high:
        installed = "?" if found is None else f"{found[0]}.{found[1]}"
        warnings.warn(
            "keras-quant's fix for Keras's `fit` under a multi-worker "
            f"MultiWorkerMirroredStrategy was checked on Keras {low[0]}."
            f"{low[1]} to {high[0]}.{high[1]}, not on {installed}, so it is "
            "not applied. If `fit` fails there (keras-team/keras#20585), "
            "install a checked Keras (see constraints.txt).",
            stacklevel=2,
        )
        return False
    try:
        from keras.src.backend.tensorflow import trainer
    except ImportError as error:  # pragma: no cover - depends on Keras
        raise versions.broken("Keras's TensorFlow trainer", error) from error
    _multi_worker_fix.extend(
        [
            trainer.reduce_per_replica,
            trainer.TensorFlowTrainer._maybe_symbolic_build,
        ]
    )
    trainer.reduce_per_replica = _reduction_across_workers(trainer)
    trainer.TensorFlowTrainer._maybe_symbolic_build = _build_from_own_batch(
        trainer
    )
    return True


def _reduction_across_workers(trainer):
    """`reduce_per_replica`, averaging across replicas on several workers
    as it does on one (keras-team/keras#20585)."""
    original = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and _on_several_workers(
            trainer, strategy
        ):
            import keras

            return keras.tree.map_structure(
                lambda value: strategy.reduce("MEAN", value, axis=None),
                values,
            )
        return original(values, strategy, reduction)

    return reduce_per_replica


def _build_from_own_batch(trainer):
    """`_maybe_symbolic_build`, building from this worker's first batch
    on several workers instead of one averaged across them."""
    original = trainer.TensorFlowTrainer._maybe_symbolic_build

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self.distribute_strategy
        if iterator is not None and _on_several_workers(trainer, strategy):
            data_batch = _first_local_batch(strategy, iterator)
            iterator = None
        return original(self, iterator=iterator, data_batch=data_batch)

    return _maybe_symbolic_build


def _first_local_batch(strategy, epoch_iterator):
    """The first batch of a Keras epoch iterator, as this worker's first
    replica holds it."""
    import keras
    import tensorflow as tf

    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    for _, _, batches in epoch_iterator:
        return keras.tree.map_structure(local, next(batches))
    return None


def _on_several_workers(trainer, strategy):
    """Keras's own test for the multi-worker branches it takes."""
    return trainer._collective_all_reduce_multi_worker(strategy)
