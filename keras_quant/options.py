"""`ConvertOptions`: everything that decides how one model is converted.

One frozen value carries a conversion's settings whole, from `export`
and `plan_export` through the routes (`conversion.routes.convert`) to the
quantization engine and its child process: the mode, the integer input
and output type, the layers kept float or at 8 bits, the block size of
4-bit weights and the deployment target. Its rules that do not depend on
the model are checked once, when it is made (`__post_init__`); the
model's layer names are checked by `conversion.checks.check_options`.

A mode alone is shorthand for its default options: `ConvertOptions.of(
"int8")` is `ConvertOptions(mode=Mode.INT8)`.

This module imports neither Keras nor TensorFlow, so the options cross to
the engine's child process as they are.

>>> options = ConvertOptions.of("int8_only")
>>> options.mode, options.io_dtype
(<Mode.INT8_ONLY: 'int8_only'>, 'int8')
>>> ConvertOptions.of(options, io_dtype="uint8").io_dtype
'uint8'
"""

import dataclasses

from keras_quant import modes as modes_lib
from keras_quant import targets as targets_lib
from keras_quant.modes import MODES
from keras_quant.modes import Mode


@dataclasses.dataclass(frozen=True)
class ConvertOptions:
    """How to convert a model, checked when made.

    Attributes:
        mode: a `Mode` (its string value is accepted).
        io_dtype: integer input/output type of an integer-I/O mode:
            `"int8"` (its default) or `"uint8"`; None otherwise.
        keep_float: names of layers whose TFLite ops stay float (`int8`
            only).
        keep_8bit: names of layers whose weights stay int8, in a mode with
            4-bit weights.
        block_size: input features per weight scale (`dynamic_int4`);
            None for one scale per output channel.
        target: a deployment target of `targets.DEPLOYMENTS` (`"micro"`)
            whose runtime the file must run in, or None for LiteRT.

    Raises:
        ValueError: an unknown mode or target, or a setting the mode does
            not take; the message names the fix.
    """

    mode: Mode
    io_dtype: str = None
    keep_float: tuple = ()
    keep_8bit: tuple = ()
    block_size: int = None
    target: str = None

    def __post_init__(self):
        mode = modes_lib.parse_mode(self.mode)
        self._set("mode", mode)
        self._set("io_dtype", modes_lib.check_io_dtype(mode, self.io_dtype))
        self._set(
            "block_size", modes_lib.check_block_size(mode, self.block_size)
        )
        self._set("keep_float", layer_names(self.keep_float))
        self._set("keep_8bit", layer_names(self.keep_8bit))
        _check_kept_layers(self)
        self._set("target", targets_lib.check_target(self.target, mode))

    @classmethod
    def of(cls, options, **changes):
        """`options` (a `ConvertOptions`, a `Mode` or a mode's name) with
        `changes` applied."""
        if isinstance(options, ConvertOptions):
            return (
                dataclasses.replace(options, **changes) if changes else options
            )
        return cls(options, **changes)

    @property
    def deployment(self):
        """The target's `targets.Deployment`, or None."""
        return targets_lib.DEPLOYMENTS.get(self.target)

    @property
    def static_batch(self):
        """Whether the file must have a fixed batch size."""
        return self.deployment is not None and self.deployment.static_batch

    def _set(self, name, value):
        object.__setattr__(self, name, value)


def layer_names(names):
    """`names` (one name or several) as a tuple without repeats."""
    if isinstance(names, str):
        names = [names]
    return tuple(dict.fromkeys(names or ()))


def _check_kept_layers(options):
    if options.keep_float and options.mode is not Mode.INT8:
        raise ValueError(
            "`keep_float` needs mode='int8', the one mode where float ops "
            "may sit between quantized ones. Received: "
            f"mode={options.mode.value!r}."
        )
    if options.keep_8bit and MODES[options.mode].weight_bits != 4:
        four_bit = [
            m.value for m, spec in MODES.items() if spec.weight_bits == 4
        ]
        raise ValueError(
            "`keep_8bit` keeps layers at 8 bits in a mode with 4-bit "
            f"weights: one of {four_bit}. Received: "
            f"mode={options.mode.value!r}."
        )
