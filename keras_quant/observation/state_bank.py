"""The observers' scalar state, one variable per field for a whole model.

Each observer has six scalars: its running `min_` and `max_`, the counts
`batches_seen_` and `nonfinite_batches_`, its `momentum` and its
`record_mask`. An `ObservedModel` keeps them in one `StateBank`: one Keras
variable per field with one row per observer, so that a step reads and
writes each field once for the whole model instead of once per observer
(decision D44). An observer reaches its row through `Slot`s, which read
and assign like scalar variables.

An observer outside such a model (created alone, or from a file of an
earlier version) owns a bank of one row.

Example:

>>> layer = keras.layers.Layer()
>>> bank = StateBank(layer, [default_row(momentum=0.0)] * 3)
>>> bank.slot("max_", 1).assign(2.5)
>>> keras.ops.convert_to_numpy(bank.variables["max_"].value)
array([0. , 2.5, 0. ], dtype=float32)
"""

import dataclasses

import keras
import numpy as np
from keras import ops


def counter_dtype():
    """The dtype of the observers' counts: int64, or int32 on JAX without
    64-bit types (`jax_enable_x64` off, its default), where int64 would be
    truncated to int32 with a warning at every use."""
    if keras.backend.backend() != "jax":
        return "int64"
    import jax

    return "int64" if jax.config.jax_enable_x64 else "int32"


@dataclasses.dataclass(frozen=True)
class Field:
    """One scalar of an observer's state: its attribute name, dtype (a
    function, as the counter dtype depends on the backend) and the value
    a new observer starts with."""

    name: str
    dtype: object
    default: object


# In the order of an observer's saved variables (`.keras` files).
FIELDS = (
    Field("min_", lambda: "float32", 0.0),
    Field("max_", lambda: "float32", 0.0),
    Field("batches_seen_", counter_dtype, 0),
    Field("nonfinite_batches_", counter_dtype, 0),
    Field("momentum", lambda: "float32", 0.0),
    Field("record_mask", lambda: "int32", 1),
)
NAMES = tuple(field.name for field in FIELDS)


def default_row(**values):
    """`{field name: value}` of a new observer, with `values` overriding."""
    row = {field.name: field.default for field in FIELDS}
    row.update(values)
    return row


class StateBank:
    """The scalar state of several observers, one variable per field.

    Args:
        owner: the layer whose weights the variables are (the model), so
            that they are part of its state (`tf.distribute`, JAX); or None
            for variables tracked by no layer.
        rows: one `{field name: value}` per observer (`default_row`).
    """

    def __init__(self, owner, rows):
        self.size = len(rows)
        self.variables = {
            field.name: _variable(
                owner, field, [row[field.name] for row in rows]
            )
            for field in FIELDS
        }

    def slot(self, name, index):
        """Row `index` of field `name`, used like a scalar variable."""
        return Slot(self, name, index)

    def rows(self, indices):
        """`{field name: vector}` of the given rows, as tensors (each
        variable read once)."""
        return {
            name: self.gather(read_once(variable), indices)
            for name, variable in self.variables.items()
        }

    def gather(self, values, indices):
        """`values` (a vector over the bank's rows) at `indices`."""
        if self.covers(indices):
            return values
        return ops.take(values, ops.convert_to_tensor(indices, "int32"))

    def assign_rows(self, name, indices, values):
        """Writes `values` into rows `indices` of field `name`."""
        variable = self.variables[name]
        values = ops.cast(values, variable.dtype)
        if not self.covers(indices):
            positions = ops.convert_to_tensor(indices, "int32")[:, None]
            values = ops.scatter_update(variable.value, positions, values)
        variable.assign(values)

    def covers(self, indices):
        """Whether `indices` are all the rows, in order."""
        return list(indices) == list(range(self.size))


class Slot:
    """One row of a bank's field: `.value`, `.dtype` and `.assign` as a
    scalar variable has them."""

    def __init__(self, bank, name, index):
        self.variable = bank.variables[name]
        self.bank, self.name, self.index = bank, name, index

    @property
    def dtype(self):
        return self.variable.dtype

    @property
    def value(self):
        return self.variable.value[self.index]

    def numpy(self):
        return ops.convert_to_numpy(self.value)

    def assign(self, value):
        self.bank.assign_rows(self.name, [self.index], ops.reshape(value, (1,)))


def read_once(variable):
    """`variable`'s value as a tensor, read once: used as it is, a
    TensorFlow variable is read again by every op that takes it."""
    return ops.copy(variable.value)


def _variable(owner, field, values):
    dtype = field.dtype()
    initial = np.asarray(values, dtype=dtype).reshape(-1)

    def initializer(shape, dtype=None):
        return ops.convert_to_tensor(initial, dtype=dtype)

    spec = dict(
        shape=initial.shape,
        dtype=dtype,
        trainable=False,
        name=f"observer_{field.name.strip('_')}",
        aggregation="only_first_replica",
    )
    if owner is None:
        return keras.Variable(initializer, **spec)
    return owner.add_weight(initializer=initializer, **spec)
