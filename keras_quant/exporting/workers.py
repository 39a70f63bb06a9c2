"""Which worker of a multi-worker strategy writes the exports: the chief.

Under `tf.distribute.MultiWorkerMirroredStrategy` every worker runs the
same script, so `export`, `TFLiteExport` and the save hook run on each of
them. Only the chief writes: on every other worker `exporting.api.run`
writes nothing and returns no result (`exports_here`). The same script can
so run unchanged on every worker; `export_many` and `TFLiteExport.results`
are empty on the others.

The chief is the `"chief"` task if the cluster has one, else task 0 of
`"worker"`, as TensorFlow decides which worker broadcasts the initial
values of variables. The chief exports its own state: weights and ranges
are the same on every worker (gradients and observer statistics are
combined across workers), but Keras updates the moving statistics of a
`BatchNormalization(synchronized=False)` (the default) per replica, from
its share of each batch, so the chief's differ from the others' and from
one process's. The chief warns about such layers
(`warn_if_batch_norm_per_replica`); `synchronized=True` gives every
worker the statistics of the global batches.
"""

import warnings

import keras

from keras_quant._compat import keras_internals
from keras_quant.measurement.evaluation import distribution_strategy
from keras_quant.measurement.evaluation import spans_workers

CHIEF_TASK = "chief"
WORKER_TASK = "worker"


def is_chief(task_type, task_id, jobs):
    """Whether the task `(task_type, task_id)` of a cluster with `jobs`
    (its job names) is the one that writes files.

    >>> is_chief("worker", 0, ["worker"]), is_chief("worker", 1, ["worker"])
    (True, False)
    >>> is_chief("worker", 0, ["chief", "worker"])
    False
    >>> is_chief(None, None, [])  # no cluster: one process
    True
    """
    if task_type is None:
        return True
    if CHIEF_TASK in jobs:
        return task_type == CHIEF_TASK
    return task_type == WORKER_TASK and task_id == 0


def task_of(model):
    """`(task_type, task_id, jobs)` of this process in the cluster of the
    strategy `model` runs under, or `(None, None, [])` outside a cluster."""
    strategy = distribution_strategy(model)
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return None, None, []
    jobs = sorted(resolver.cluster_spec().as_dict())
    return resolver.task_type, resolver.task_id, jobs


def exports_here(model):
    """Whether this process writes the exports of `model`: always, unless
    the strategy `model` runs under spans several workers and this one is
    not the chief. The chief of several workers also checks the
    BatchNormalization layers (`warn_if_batch_norm_per_replica`).

    >>> inputs = keras.Input((2,))
    >>> exports_here(keras.Model(inputs, inputs))
    True
    """
    if not spans_workers(model):
        return True
    if not is_chief(*task_of(model)):
        return False
    warn_if_batch_norm_per_replica(model)
    return True


def warn_if_batch_norm_per_replica(model):
    """Warns if `model` has BatchNormalization layers whose moving
    statistics each replica updates alone (`synchronized=False`): under a
    multi-worker strategy the export holds the chief's."""
    names = [
        layer.name
        for layer in keras_internals.sublayers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
        and not getattr(layer, "synchronized", True)
    ]
    if names:
        warnings.warn(
            f"Model '{model.name}' trains on several workers with "
            f"BatchNormalization layers {names} whose moving statistics "
            "each worker updates from its own share of the batches, so "
            "the workers hold different ones: the chief exports its own. "
            "Create them with BatchNormalization(synchronized=True) to "
            "give every worker the statistics of the whole batches.",
            stacklevel=4,
        )
