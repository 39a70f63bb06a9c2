"""The observers' scalar state, two variables for a whole model.

Each observer has six scalars: its running `min_` and `max_`, the counts
`batches_seen_` and `nonfinite_batches_`, its `momentum` and its
`record_mask`. An `ObservedModel` keeps them in one `StateBank`: one Keras
variable per dtype, a row per observer and a column per field, so that a
step reads and writes two variables for the whole model instead of six
scalars per observer (decisions D44, D46). An observer reaches its cells
through `Slot`s, which read and assign like scalar variables.

An observer outside such a model (created alone, or from a file of an
earlier version) owns a bank of one row.

Example:

>>> layer = keras.layers.Layer()
>>> bank = StateBank(layer, [default_row(momentum=0.0)] * 3)
>>> bank.slot("max_", 1).assign(2.5)
>>> [float(bank.slot("max_", row).numpy()) for row in range(3)]
[0.0, 2.5, 0.0]
>>> sorted(bank.variables)
['counts', 'reals']
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
    """One scalar of an observer's state: its attribute name, the dtype it
    is saved with (a function, as the counter dtype depends on the
    backend) and the value a new observer starts with. `GROUPS` says
    which bank variable holds it."""

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
# The bank's variables: each holds the fields of one dtype, as columns.
GROUPS = {
    "reals": (lambda: "float32", ("min_", "max_", "momentum")),
    "counts": (
        counter_dtype,
        ("batches_seen_", "nonfinite_batches_", "record_mask"),
    ),
}


def default_row(**values):
    """`{field name: value}` of a new observer, with `values` overriding."""
    row = {field.name: field.default for field in FIELDS}
    row.update(values)
    return row


class StateBank:
    """The scalar state of several observers: one variable per dtype
    (`GROUPS`), a row per observer, a column per field.

    Args:
        owner: the layer whose weights the variables are (the model), so
            that they are part of its state (`tf.distribute`, JAX); or None
            for variables tracked by no layer.
        rows: one `{field name: value}` per observer (`default_row`).
    """

    def __init__(self, owner, rows):
        self.size = len(rows)
        self.variables = {
            group: _variable(
                owner,
                group,
                np.asarray(
                    [[row[name] for name in names] for row in rows],
                    dtype(),
                ).reshape(len(rows), len(names)),
            )
            for group, (dtype, names) in GROUPS.items()
        }
        self.cell = {
            name: (group, column)
            for group, (_, names) in GROUPS.items()
            for column, name in enumerate(names)
        }

    def slot(self, name, index):
        """Row `index` of field `name`, used like a scalar variable."""
        return Slot(self, name, index)

    def read_tables(self, indices):
        """`{variable name: value}` for a step that updates rows
        `indices`: when these are only some rows, each variable is read
        once into a tensor, which `rows` and `assign_rows` share (used as
        it is, a TensorFlow variable is read again by every op that takes
        it)."""
        if self.covers(indices):
            return {g: v.value for g, v in self.variables.items()}
        return {g: ops.copy(v.value) for g, v in self.variables.items()}

    def rows(self, values, indices):
        """`{field name: vector}` of rows `indices` of `values`
        (`read_tables`)."""
        state = {}
        for group, (_, names) in GROUPS.items():
            table = values[group]
            if not self.covers(indices):
                rows = ops.convert_to_tensor(indices, "int32")
                table = ops.take(table, rows, axis=0)
            state.update(zip(names, ops.unstack(table, axis=1)))
        return state

    def assign_rows(self, values, indices, state):
        """Writes `state` (`{field name: vector}`, every field) into rows
        `indices` of `values` (`read_tables`), and that into the variables."""
        for group, (_, names) in GROUPS.items():
            variable = self.variables[group]
            table = ops.stack(
                [ops.cast(state[name], variable.dtype) for name in names],
                axis=1,
            )
            if not self.covers(indices):
                positions = ops.convert_to_tensor(indices, "int32")[:, None]
                table = ops.scatter_update(values[group], positions, table)
            variable.assign(table)

    def assign_cell(self, name, index, value):
        """Writes the scalar `value` into row `index` of field `name`."""
        group, column = self.cell[name]
        variable = self.variables[group]
        value = ops.reshape(ops.cast(value, variable.dtype), (1,))
        position = ops.convert_to_tensor([[index, column]], "int32")
        variable.assign(ops.scatter_update(variable.value, position, value))

    def covers(self, indices):
        """Whether `indices` are all the rows, in order."""
        return list(indices) == list(range(self.size))


class Slot:
    """One cell of a bank: `.value`, `.dtype` and `.assign` as a scalar
    variable has them."""

    def __init__(self, bank, name, index):
        group, self.column = bank.cell[name]
        self.variable = bank.variables[group]
        self.bank, self.name, self.index = bank, name, index

    @property
    def dtype(self):
        return self.variable.dtype

    @property
    def value(self):
        return self.variable.value[self.index, self.column]

    def numpy(self):
        return host_value(self)

    def assign(self, value):
        self.bank.assign_cell(self.name, self.index, value)


def read(variable):
    """The value of a variable (a Keras variable, a `Slot`, or a tensor) as
    a Python scalar or a numpy array, read on the host.

    Every host-side read of keras-quant's state goes through here
    (`host_value`), so it works for the variables of `tf.distribute`
    strategies too, inside `strategy.scope()` (a cross-replica context)
    as outside it, where `int(variable)` and numpy's conversion of a scalar
    one fail.
    """
    value = host_value(variable)
    return value.item() if value.ndim == 0 else value


def host_value(variable):
    """The value of a variable (a Keras variable, a `Slot`, or a tensor) as
    a numpy array.

    On TensorFlow, a Keras variable built under a `tf.distribute` strategy
    holds a distributed variable (one copy per replica), which numpy cannot
    convert when it is a scalar ("object __array__ method not producing an
    array"): it is first read into a tensor, which in a cross-replica
    context is the first replica's copy (keras-quant's variables are
    mirrored: all copies are equal).
    """
    value = variable.value if hasattr(variable, "value") else variable
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if isinstance(value, tf.Variable):
            value = tf.convert_to_tensor(value)
    return np.asarray(ops.convert_to_numpy(value))


def _variable(owner, group, initial):
    def initializer(shape, dtype=None):
        return ops.convert_to_tensor(initial, dtype=dtype)

    spec = dict(
        shape=initial.shape,
        dtype=initial.dtype.name,
        trainable=False,
        name=f"observer_{group}",
        aggregation="only_first_replica",
    )
    if owner is None:
        return keras.Variable(initializer, **spec)
    return owner.add_weight(initializer=initializer, **spec)
