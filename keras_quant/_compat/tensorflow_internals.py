"""Private parts of TensorFlow that keras-quant uses.

Freezing a concrete function's variables into constants (the converter's
own first step, public only through a SavedModel round trip), the
converter's error class, and whether a graph being traced will be
compiled by XLA (`in_xla_context`).
"""

from keras_quant._compat import versions

versions.check("tensorflow")

try:
    import tensorflow as tf
    from tensorflow.lite.python.convert_phase import ConverterError
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2 as freeze,
    )
    from tensorflow.python.ops.control_flow_util import (
        GraphOrParentsInXlaContext,
    )
except ImportError as error:  # pragma: no cover - depends on TensorFlow
    raise versions.broken("TensorFlow's converter internals", error) from error

__all__ = ["ConverterError", "freeze", "in_xla_context"]


def in_xla_context():
    """Whether the graph being traced (or one it is nested in) will be
    compiled by XLA: a `tf.function(jit_compile=True)`, which cannot hold
    an op that calls back into Python. False when running eagerly."""
    return GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())
