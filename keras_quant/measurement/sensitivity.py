"""Per-point sensitivity: how far each quantized tensor strays from float.

`analyze` exports two probe models in which every quantization point is
also a model output: the float graph as float32, and the fake-quant graph
as int8, which TFLite quantizes exactly as it quantizes the exported
model. Both run in LiteRT on the same real inputs; each point's int8
tensor (dequantized) is compared with its float twin:

- `sqnr_db`: signal-to-quantization-noise ratio, `10 log10(sum f^2 /
  sum (f - q)^2)`; higher is better, about 6 dB per bit;
- `relative_error`: `||f - q|| / ||f||`, the same ratio as a fraction;
- `added_error`: `relative_error` minus the largest `relative_error` of the
  points feeding this one: the error the layer between them adds (errors
  pile up downstream, so the cumulative error alone blames the last
  layers).

Per layer, it also measures what keeping that one layer apart would buy:
the relative error of the model's outputs against float, in the mode and
with the layer kept apart (`LayerGain`). In `int8`, a layer is kept float
(`keep_float`); in a mode with 4-bit weights, its weights are kept int8
(`keep_8bit`), for layers that have weights (`KEPT_APART`). That ranks
layers for those options: a point's own error is not all removable by
keeping its layer float (the next int8 layer still reads the tensor
rounded), so the ranking measures rather than infers. It costs one
conversion per layer.
"""

import dataclasses

import keras
import numpy as np

from keras_quant import data as data_lib
from keras_quant import text
from keras_quant._compat import keras_internals
from keras_quant.conversion import converter
from keras_quant.conversion import graphs
from keras_quant.conversion import routes as conversion
from keras_quant.errors import KerasQuantError
from keras_quant.graph import trace as graph_lib
from keras_quant.measurement import evaluation
from keras_quant.modes import Mode
from keras_quant.observation.layers import Split
from keras_quant.observation.observed_model import collected_ranges
from keras_quant.observation.observers import Observer
from keras_quant.runtime import litert

# How `analyze` keeps one layer apart, per mode: the `convert` option.
KEPT_APART = {
    Mode.INT8: "keep_float",
    Mode.INT4_WEIGHTS: "keep_8bit",
    Mode.DYNAMIC_INT4: "keep_8bit",
    Mode.INT8X4: "keep_8bit",
}


@dataclasses.dataclass(frozen=True)
class PointError:
    """The error of one quantization point.

    Attributes:
        point: the point's name (see `keras_quant.find_points`).
        layer: the layer whose output it is; None for a model input.
        sqnr_db: signal-to-quantization-noise ratio in dB (inf if exact).
        relative_error: `||float - int8|| / ||float||`.
        added_error: `relative_error` minus that of the points feeding it.
    """

    point: str
    layer: str
    sqnr_db: float
    relative_error: float
    added_error: float


@dataclasses.dataclass(frozen=True)
class LayerGain:
    """What keeping one layer apart (float, or 8-bit weights in a 4-bit
    mode) does to the model's outputs.

    Attributes:
        layer: the layer's name.
        output_error: relative error of the outputs with it kept apart.
        gain: the mode's output error minus `output_error`.
    """

    layer: str
    output_error: float
    gain: float


@dataclasses.dataclass(frozen=True)
class Sensitivity:
    """Per-point errors of an int8 model against float, worst first.

    Attributes:
        points: a `PointError` per quantization point, largest
            `relative_error` first.
        samples: how many inputs were compared.
        output_error: relative error of the outputs in `mode`.
        layers: a `LayerGain` per layer, largest gain first (empty if
            `analyze` was asked for points only).
        mode: the mode the layers were measured in (`int8`: kept float;
            a 4-bit mode: weights kept int8).
    """

    points: tuple
    samples: int
    output_error: float = None
    layers: tuple = ()
    mode: Mode = Mode.INT8

    def layers_to_keep(self):
        """Layers whose keeping apart lowers the output error, most first:
        for `keep_float` in `int8`, for `keep_8bit` in a 4-bit mode."""
        return [g.layer for g in self.layers if g.gain > 0]

    def layers_to_keep_float(self):
        """`layers_to_keep` of an `int8` analysis."""
        if KEPT_APART[self.mode] != "keep_float":
            raise ValueError(
                f"This analysis kept layers 8-bit in {self.mode.value!r}; "
                "call `layers_to_keep()`, or analyze with mode='int8'."
            )
        return self.layers_to_keep()

    def table(self):
        """The point errors as a text table, worst first; then, if
        measured, the layers by what keeping each float gains."""
        rows = [("point", "layer", "SQNR dB", "rel. error", "added")]
        rows += [
            (
                p.point,
                p.layer or "(input)",
                f"{p.sqnr_db:.1f}",
                f"{p.relative_error:.4f}",
                f"{p.added_error:+.4f}",
            )
            for p in self.points
        ]
        if not self.layers:
            return text.table(rows)
        kept = "float" if KEPT_APART[self.mode] == "keep_float" else "8-bit"
        layers = [(f"layer kept {kept}", "output error", "gain")]
        layers += [
            (g.layer, f"{g.output_error:.4f}", f"{g.gain:+.4f}")
            for g in self.layers
        ]
        return (
            f"{text.table(rows)}\n\n{self.mode.value} output error: "
            f"{self.output_error:.4f}\n{text.table(layers)}"
        )

    def to_dict(self):
        """A JSON-ready dict (an exact point's `sqnr_db` becomes None)."""
        return {
            "samples": self.samples,
            "mode": self.mode.value,
            "output_error": self.output_error,
            "layers": [dataclasses.asdict(g) for g in self.layers],
            "points": [
                {
                    **dataclasses.asdict(p),
                    "sqnr_db": None if np.isinf(p.sqnr_db) else p.sqnr_db,
                }
                for p in self.points
            ],
        }


def analyze(
    model,
    data,
    samples=512,
    batch_size=256,
    per_layer=True,
    mode="int8",
    kept=(),
):
    """Measures each quantization point's int8 error against float, and
    what keeping each layer apart buys in `mode`.

    Args:
        model: an observed model with collected ranges (as for `int8`).
        data: real inputs: an array (or list of arrays), `(x, y)`, or a
            `tf.data.Dataset` of `(x, y)` batches.
        samples: how many inputs to use, from the start. Defaults to `512`.
        batch_size: LiteRT batch size. Defaults to `256`.
        per_layer: also measure each layer kept apart (one conversion per
            layer). Defaults to `True`.
        mode: the mode the layers are measured in: `"int8"` (each layer
            kept float), or `"int4_weights"`, `"dynamic_int4"`,
            `"int8x4"` (each layer with weights kept at 8 bits). Defaults
            to `"int8"`.
        kept: layers kept apart in every conversion measured (the
            layers int8 cannot hold, which `mode="auto"` keeps float
            first); each other layer's gain is measured on top of them.

    Returns:
        A `Sensitivity`.

    Raises:
        NotCalibratedError: the model has no ranges yet.
        NonFiniteActivationError: its observers saw NaN or Inf values.

    Example:

    >>> keras.utils.set_random_seed(0)  # the weights, whatever ran before
    >>> inputs = keras.Input((4,), name="features")
    >>> hidden = keras.layers.Dense(8, activation="relu", name="hidden")
    >>> outputs = keras.layers.Dense(2, name="out")(hidden(inputs))
    >>> model = keras_quant.observe(keras.Model(inputs, outputs))
    >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    >>> _ = model.predict(x, verbose=0)
    >>> result = keras_quant.analyze(model, x)
    >>> [p.point for p in result.points][-1]
    'features'
    >>> all(p.sqnr_db > 30 for p in result.points)
    True
    """
    mode = _analyzed_mode(mode)
    collected_ranges(model, "analyze()")
    x = data_lib.sample_inputs(data, samples)
    tensors = point_tensors(model, x, batch_size)
    return from_tensors(model, x, tensors, per_layer, batch_size, mode, kept)


def _analyzed_mode(mode):
    """`mode` as a `Mode` of `KEPT_APART`, or ValueError naming those."""
    parsed = Mode(mode) if mode in {m.value for m in Mode} else mode
    if parsed not in KEPT_APART:
        raise ValueError(
            f"`analyze` measures layers in {[m.value for m in KEPT_APART]}. "
            f"Received: mode={mode!r}."
        )
    return parsed


def from_tensors(
    model,
    x,
    tensors,
    per_layer=True,
    batch_size=256,
    mode=Mode.INT8,
    kept=(),
):
    """`analyze` on the `point_tensors` of inputs `x`, already computed."""
    upstream = _upstream_points(model)
    layers = _point_layers(model)
    errors = {
        point: _relative_error(float_value, int8_value)
        for point, (float_value, int8_value) in tensors.items()
    }
    points = [
        PointError(
            point=point,
            layer=layers.get(point),
            sqnr_db=sqnr_db(errors[point]),
            relative_error=errors[point],
            added_error=errors[point]
            - max((errors[up] for up in upstream[point]), default=0.0),
        )
        for point in tensors
    ]
    points.sort(key=lambda p: -p.relative_error)
    first = next(iter(tensors.values()))[0]
    output_error, gains = None, ()
    if per_layer:
        candidates = [p.layer for p in points if p.layer is not None]
        if KEPT_APART[mode] == "keep_8bit":
            candidates = weighted_layers(model)
        candidates = [c for c in dict.fromkeys(candidates) if c not in kept]
        output_error, gains = layer_gains(
            model, x, candidates, batch_size, mode, kept
        )
    return Sensitivity(
        points=tuple(points),
        samples=len(first),
        output_error=output_error,
        layers=gains,
        mode=mode,
    )


def layer_gains(model, x, layers, batch_size=256, mode=Mode.INT8, kept=()):
    """The output error in `mode` with the layers `kept` apart, and a
    `LayerGain` per layer kept apart besides them (`KEPT_APART`), best
    first.

    A layer the option refuses (it has no op of its own) is left out.
    """
    reference = _flat(evaluation.predict_float(model, x, batch_size))
    option = KEPT_APART[mode]

    def output_error(kept):
        tflite = conversion.convert(model, mode, **{option: kept})
        found = litert.run(tflite, x, batch_size=batch_size)
        return _relative_error(reference, _flat(found))

    mode_error = output_error(list(kept))
    gains = []
    for layer in layers:
        try:
            error = output_error([*kept, layer])
        except KerasQuantError:
            continue
        gains.append(LayerGain(layer, error, mode_error - error))
    gains.sort(key=lambda g: -g.gain)
    return mode_error, tuple(gains)


def weighted_layers(model):
    """Names of the layers of `model` with a weight matrix or kernel (rank
    2 or more): those whose weights a 4-bit mode stores in 4 bits."""
    names = []
    for op in graph_lib.trace(model).ops:
        layer = graphs.unsplit(op.layer)
        if isinstance(layer, Observer):
            continue
        if any(len(w.shape) >= 2 for w in getattr(layer, "weights", ())):
            names.append(graphs.layer_name(op.layer))
    return list(dict.fromkeys(names))


def _flat(outputs):
    parts = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return np.concatenate([np.ravel(p) for p in parts])


def point_tensors(model, x, batch_size=256):
    """`{point: (float tensor, int8 tensor dequantized)}` from LiteRT.

    Args:
        model: an observed model with collected ranges.
        x: model inputs (an array or a list of arrays).
        batch_size: LiteRT batch size.
    """
    found = {}
    for bits, mode in ((None, Mode.FLOAT32), (8, Mode.INT8)):
        probe, points = _probe(model, bits)
        tflite = converter.run_converter(probe, mode)
        outputs = litert.run(tflite, x, batch_size=batch_size)
        outputs = outputs if isinstance(outputs, list) else [outputs]
        found[bits] = dict(zip(points, outputs))
    return {
        point: (found[None][point], found[8][point]) for point in found[None]
    }


def simulated_errors(model, x, batch_size=256):
    """Per-point relative error of the Keras int8 simulation against float.

    Cheap enough for every epoch: no conversion, two Keras predictions of
    the probe graphs (float, and with each range as int8 fake-quant).

    Returns:
        `{point: relative error}`.
    """
    found = {}
    for bits in (None, 8):
        probe, points = _probe(model, bits)
        outputs = probe.predict(x, batch_size=batch_size, verbose=0)
        outputs = outputs if isinstance(outputs, list) else [outputs]
        found[bits] = dict(zip(points, outputs))
    errors = {
        point: _relative_error(found[None][point], found[8][point])
        for point in found[None]
    }
    return errors


def _probe(model, bits):
    """The (fake-quant) graph of `model` with every point as an output;
    returns the model and the points, in output order."""
    record = {}
    rebuilt = graphs.fake_quant_graph(model, bits=bits, record=record)
    return keras.Model(rebuilt.inputs, list(record.values())), list(record)


def _relative_error(float_value, int8_value):
    float_value = np.asarray(float_value, np.float64)
    noise = float(np.sum((float_value - int8_value) ** 2))
    signal = float(np.sum(float_value**2))
    if signal == 0.0:
        return 0.0 if noise == 0.0 else np.inf
    return float(np.sqrt(noise / signal))


def sqnr_db(relative_error):
    if relative_error == 0.0:
        return np.inf
    return float(-20.0 * np.log10(relative_error))


def _point_layers(model):
    """`{point: name of the layer computing it}`; model inputs are absent."""
    graph = graph_lib.trace(model)
    layers = {}
    for op in graph.ops:
        if isinstance(op.layer, Split):
            for observer in op.layer.observers:
                layers[observer.point] = op.layer.layer.name
        elif isinstance(op.layer, Observer):
            producer = graph.producer(op.inputs[0])
            if producer is not None:
                layers[op.layer.point] = graphs.layer_name(producer.layer)
    return layers


def _upstream_points(model):
    """`{point: [points whose tensors flow into it with no point between]}`,
    read off the symbolic graph of the fake-quant probe."""
    record = {}
    graphs.fake_quant_graph(model, record=record)
    point_of = {id(value): point for point, value in record.items()}
    upstream = {}
    for point, value in record.items():
        found, stack, seen = [], list(_inputs_of(value)), set()
        while stack:
            tensor = stack.pop()
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
            if id(tensor) in point_of:
                found.append(point_of[id(tensor)])
            else:
                stack.extend(_inputs_of(tensor))
        upstream[point] = found
    return upstream


def _inputs_of(tensor):
    """The input tensors of the layer call that produced `tensor`."""
    return keras_internals.producer_inputs(tensor)
