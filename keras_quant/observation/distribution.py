"""Exact range statistics across `tf.distribute` replicas and workers.

`tf.distribute.ReduceOp` offers only SUM and MEAN, so a min or max across
replicas is computed by gathering every replica's value and reducing the
gathered vector. Outside a multi-replica context every function returns its
arguments unchanged.
"""

import tensorflow as tf


def _replica_context():
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync <= 1:
        return None
    return context


def spans_workers(strategy=None):
    """Whether `strategy` (default: the current one) has replicas in other
    processes, which every step must wait for (more replicas in sync than
    devices on this worker)."""
    strategy = strategy or tf.distribute.get_strategy()
    if strategy.num_replicas_in_sync == 1:
        return False  # (the default strategy has no `worker_devices`)
    local_replicas = len(strategy.extended.worker_devices)
    return strategy.num_replicas_in_sync > local_replicas


def replicas_in_sync():
    """How many replicas run this step in lockstep (1 outside a strategy)."""
    context = tf.distribute.get_replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def reduce_batch_stats(batch_min, batch_max, nonfinite):
    """Global min, max and NaN/Inf flag of a batch split across replicas.

    Args:
        batch_min: this replica's minimum of each point (float32, a scalar
            or a vector over points).
        batch_max: this replica's maximum, shaped like `batch_min`.
        nonfinite: true where this replica's tensor holds NaN or Inf
            (bool), shaped like `batch_min`; true globally if true on any
            replica.

    Returns:
        The same three values over the global batch, in one exchange.
    """
    context = _replica_context()
    if context is None:
        return batch_min, batch_max, nonfinite
    gathered = context.all_gather(
        tf.stack([batch_min, -batch_max, tf.cast(nonfinite, tf.float32)])[None],
        axis=0,
    )
    low = tf.reduce_min(gathered[:, 0], axis=0)
    high = -tf.reduce_min(gathered[:, 1], axis=0)
    flagged = tf.reduce_max(gathered[:, 2], axis=0) > 0
    return low, high, flagged


def sum_across_replicas(value):
    """The sum of `value` over all replicas (itself outside one)."""
    context = _replica_context()
    if context is None:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)
