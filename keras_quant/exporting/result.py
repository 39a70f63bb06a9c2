"""`ExportResult`: what an export wrote and how it compares with float."""

import dataclasses

from keras_quant.modes import Mode


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What an export wrote and, given data, how it compares with float.

    Attributes:
        path: the `.tflite` file written.
        mode: the `Mode` exported.
        io_dtype: integer input/output type (`int8_only`), else None.
        size_bytes: size of the file.
        float32_size_bytes: size of the same model exported as float32.
        size_ratio: `size_bytes / float32_size_bytes`.
        ranges: `{point name: (min, max)}` used, for range-based modes.
        float_metrics: compiled loss and metrics of the Keras model on the
            validation data (None without `validation_data`).
        quantized_metrics: the same for the `.tflite` model in LiteRT.
        max_abs_output_diff: largest output difference, float vs LiteRT.
        keep_float: layers whose ops were kept float (`int8` only).
        keep_8bit: layers whose weights were kept int8 (modes with 4-bit
            weights only).
        selection: for `mode="auto"`, the `Selection`: every candidate
            tried with its measured size, accuracy and latency, and why
            the written one was chosen.
        block_size: input features per weight scale (`dynamic_int4`), or
            None for per-channel scales.
        ranges_epoch, weights_epoch: the training epochs (1-based) the
            ranges and the weights come from, when `RangeCalibration`
            collected them during `fit`; else None.
        target: the deployment target the file was made for (`"micro"`),
            or None.
        micro: for `target="micro"`, the `MicroReport` of the file's run
            in TensorFlow Lite for Microcontrollers: metrics measured
            there, its largest difference from LiteRT in int8 steps, the
            smallest arena in bytes and the ops used.
    """

    path: str
    mode: Mode
    io_dtype: str
    size_bytes: int
    float32_size_bytes: int
    size_ratio: float
    ranges: dict
    float_metrics: dict = None
    quantized_metrics: dict = None
    max_abs_output_diff: float = None
    keep_float: tuple = ()
    selection: object = None
    block_size: int = None
    ranges_epoch: int = None
    weights_epoch: int = None
    keep_8bit: tuple = ()
    target: str = None
    micro: object = None

    @property
    def label(self):
        """The mode and the layers kept apart, e.g. `'int8x4 + 8-bit
        ['dense']'`."""
        return layer_options_label(self.mode, self.keep_float, self.keep_8bit)

    def metric_drop(self, name):
        """`float - quantized` for a metric both were evaluated on."""
        return self.float_metrics[name] - self.quantized_metrics[name]

    def to_dict(self):
        """A JSON-ready dict."""
        result = dataclasses.asdict(self)
        result["mode"] = self.mode.value
        result["ranges"] = {k: list(v) for k, v in self.ranges.items()}
        result["keep_float"] = list(self.keep_float)
        result["keep_8bit"] = list(self.keep_8bit)
        if self.selection is not None:
            result["selection"] = self.selection.to_dict()
        if self.micro is not None:
            result["micro"] = self.micro.to_dict()
        return result


def layer_options_label(mode, keep_float=(), keep_8bit=()):
    """A mode with the layers kept float or 8-bit.

    >>> layer_options_label(Mode.INT8X4, keep_8bit=("dense",))
    "int8x4 + 8-bit ['dense']"
    """
    label = Mode(mode).value
    if keep_float:
        label += f" + float {list(keep_float)}"
    if keep_8bit:
        label += f" + 8-bit {list(keep_8bit)}"
    return label
