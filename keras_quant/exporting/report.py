"""Reports: `report.json` and a self-contained `report.html` of an export.

The HTML holds, as inline PNG images drawn with matplotlib:

- the mode comparison: size, metrics and single-thread latency of every
  exported mode (or every candidate `mode="auto"` tried);
- the histogram of each quantization point's float activations on the
  validation data, with the range in use marked;
- the per-point error of int8 against float (SQNR, from `analyze`) and, per
  layer, what keeping it float gains.

Without validation data the report has the modes and the ranges only.

Example:

>>> inputs = keras.Input((4,), name="features")
>>> model = keras.Model(inputs, keras.layers.Dense(3, name="out")(inputs))
>>> model.compile(loss="mse")
>>> observed = keras_quant.observe(model)
>>> x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
>>> _ = observed.predict(x, verbose=0)
>>> result = keras_quant.export(observed, tmp_dir + "/r/m.tflite")
>>> paths = write_report(tmp_dir + "/r", observed, [result], (x, x[:, :3]))
>>> sorted(os.path.basename(p) for p in paths)
['report.html', 'report.json']
"""

import base64
import datetime
import html
import io
import json
import os

import numpy as np

from keras_quant import data as data_lib
from keras_quant.conversion import tfmot_interop
from keras_quant.errors import KerasQuantError
from keras_quant.exporting import files
from keras_quant.exporting.files import json_default
from keras_quant.exporting.files import write_atomically
from keras_quant.measurement import sensitivity as sensitivity_lib
from keras_quant.observation.recording import find_observers
from keras_quant.runtime import litert

# Small multiples per histogram figure, and columns of them.
POINTS_PER_FIGURE = 12
FIGURE_COLUMNS = 3
BINS = 64


def write_report(
    folder,
    model,
    results,
    validation_data=None,
    *,
    selection=None,
    samples=512,
    stem="report",
):
    """Writes `<stem>.json` and `<stem>.html` into `folder`.

    Args:
        folder: destination folder, made if missing.
        model: the observed (or QAT) model that was exported.
        results: the `ExportResult`s to compare.
        validation_data: optional `(x, y)` or inputs; enables histograms and
            per-point errors.
        selection: the `Selection` of a `mode="auto"` export, if any; its
            candidates replace the results in the mode table.
        samples: validation samples used for histograms and errors.
        stem: file name without extension. Defaults to `"report"`.

    Returns:
        `(json path, html path)`.
    """
    os.makedirs(folder, exist_ok=True)
    content = _collect(model, results, validation_data, selection, samples)
    json_path = os.path.join(folder, f"{stem}.json")
    html_path = os.path.join(folder, f"{stem}.html")
    text = json.dumps(content["json"], indent=2, default=json_default)
    write_atomically(json_path, text.encode())
    write_atomically(html_path, _html(content).encode())
    return json_path, html_path


def _collect(model, results, validation_data, selection, samples):
    """Everything both files show, measured once."""
    observers = {}
    if not tfmot_interop.is_tf_keras_model(model):  # tfmot keeps its own
        observers = {o.point: o for o in find_observers(model)}
    ranges = {
        point: o.range() for point, o in observers.items() if o.calibrated
    }
    rows = _mode_rows(results, selection, model)
    tensors, analysis = {}, None
    if validation_data is not None and ranges:
        x = data_lib.sample_inputs(validation_data, samples)
        try:
            tensors = sensitivity_lib.point_tensors(model, x)
            analysis = sensitivity_lib.from_tensors(model, x, tensors)
        except KerasQuantError:
            tensors, analysis = {}, None
    return {
        "model": model.name,
        "data": _data_description(validation_data, results),
        "rows": rows,
        "ranges": ranges,
        "tensors": {p: t[0] for p, t in tensors.items()},
        "analysis": analysis,
        "micro": [(r.label, r.micro) for r in results if r.micro is not None],
        "json": {
            "model": model.name,
            "created": datetime.datetime.now().isoformat(timespec="seconds"),
            "data": _data_description(validation_data, results),
            "modes": rows,
            "exports": [r.to_dict() for r in results],
            "ranges": {p: list(r) for p, r in ranges.items()},
            "sensitivity": None if analysis is None else analysis.to_dict(),
            "selection": None if selection is None else selection.to_dict(),
        },
    }


def _mode_rows(results, selection, model):
    """One dict per mode (or per `auto` candidate): size, metrics, latency."""
    if selection is not None:
        return [
            {
                "mode": trial.label,
                "size_kb": _kb(trial.size_bytes),
                selection.budget.metric: trial.metric,
                "drop": trial.drop,
                "latency_us": trial.latency_us,
                "chosen": trial is selection.chosen,
                "note": trial.note,
            }
            for trial in selection.trials
        ]
    sample = litert.zero_inputs(model)
    rows = []
    for result in results:
        row = {
            "mode": result.label,
            "size_kb": _kb(result.size_bytes),
            "size_ratio": result.size_ratio,
        }
        for name, value in (result.quantized_metrics or {}).items():
            row[name] = value
            row[f"float {name}"] = result.float_metrics[name]
        written = files.current_path(result.path)  # staged in a checkpoint
        row["latency_us"] = 1e6 * litert.latency(written, sample, runs=50)
        rows.append(row)
    return rows


def _kb(size):
    return None if size is None else round(size / 1024, 1)


def _html(content):
    figures = _histogram_figures(content["ranges"], content["tensors"])
    if content["analysis"] is not None:
        figures.append(
            (
                "Error of each quantization point",
                _error_figure(content["analysis"]),
            )
        )
    title = f"keras-quant report: {html.escape(content['model'])}"
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}"
        f"</title><style>{_CSS}</style></head><body><h1>{title}</h1>",
        f"<p>{html.escape(content['json']['created'])}</p>",
        "<h2>Modes</h2>",
        f"<p>{html.escape(content['data'])}</p>",
        _table(content["rows"]),
    ]
    selection = content["json"]["selection"]
    if selection is not None:
        parts.append(f"<p>{html.escape(selection['reason'])}</p>")
    if content["micro"]:
        parts.append(_micro_section(content["micro"]))
    if content["analysis"] is not None:
        parts.append(
            f"<h2>Sensitivity</h2><pre>{html.escape(content['analysis'].table())}</pre>"
        )
    for caption, png in figures:
        parts.append(
            f"<h2>{html.escape(caption)}</h2><img alt='{html.escape(caption)}'"
            f" src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
        )
    if not content["tensors"]:
        parts.append(
            "<p>No validation data was given: no histograms or errors.</p>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def _micro_section(reports):
    """The exports run in TensorFlow Lite for Microcontrollers."""
    rows = [
        {
            "mode": label,
            "runtime": report.runtime,
            "samples": report.samples,
            "arena bytes": report.arena_bytes,
            **{f"TFLM {name}": v for name, v in report.metrics.items()},
            "steps from LiteRT": report.max_step_difference,
            "outputs differing (%)": None
            if report.differing_share is None
            else 100 * report.differing_share,
            "ops": ", ".join(report.ops),
        }
        for label, report in reports
    ]
    return (
        "<h2>TensorFlow Lite for Microcontrollers</h2><p>Each file was run "
        "in the TFLM interpreter before it was written. Steps from LiteRT: "
        "the largest difference from LiteRT's reference kernels on the "
        "same integer inputs, in steps of the output's quantization.</p>"
        + _table(rows)
    )


_CSS = (
    "body{font-family:sans-serif;margin:2em;max-width:1200px}"
    "table{border-collapse:collapse}td,th{border:1px solid #bbb;"
    "padding:4px 8px;text-align:right}th{background:#eee}"
    "tr.chosen{background:#dfd}img{max-width:100%}"
)


# Column key -> (heading with its unit, format). Metrics are formatted as
# in the terminal (`Selection.table`, the command line): four decimals.
TABLE_COLUMNS = {
    "mode": ("Mode", "{}"),
    "size_kb": ("Size (KB)", "{:.1f}"),
    "size_ratio": ("Size / float32", "{:.2f}"),
    "drop": ("Drop (points; % of float for a loss)", "{:+.2f}"),
    "latency_us": ("Latency, 1 thread (µs)", "{:.1f}"),
    "note": ("Note", "{}"),
    "runtime": ("Runtime", "{}"),
    "samples": ("Samples", "{}"),
    "arena bytes": ("Smallest arena (bytes)", "{:,}"),
    "steps from LiteRT": ("Largest difference (steps)", "{}"),
    "outputs differing (%)": ("Outputs differing (%)", "{:.2f}"),
    "ops": ("Ops", "{}"),
}
METRIC_FORMAT = "{:.4f}"


def _table(rows):
    if not rows:
        return "<p>No export.</p>"
    columns = list(dict.fromkeys(key for row in rows for key in row))
    columns = [c for c in columns if c != "chosen"]
    head = "".join(f"<th>{html.escape(_heading(c))}</th>" for c in columns)
    body = []
    for row in rows:
        chosen = " class='chosen'" if row.get("chosen") else ""
        cells = "".join(
            f"<td>{html.escape(_cell(c, row.get(c)))}</td>" for c in columns
        )
        body.append(f"<tr{chosen}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _heading(column):
    if column in TABLE_COLUMNS:
        return TABLE_COLUMNS[column][0]
    if column.startswith("float "):
        return f"{column[len('float ') :]}, float model"
    return f"{column}, quantized"


def _cell(column, value):
    if value is None or value == "":
        return "-"
    spec = TABLE_COLUMNS.get(column, (None, METRIC_FORMAT))[1]
    return spec.format(value)


def _data_description(validation_data, results):
    """Which data the numbers were measured on, in words."""
    return _measured_on(validation_data, results) + _ranges_age(results)


def _ranges_age(results):
    """When the ranges were collected, if training said so."""
    result = results[0] if results else None
    if result is None or result.ranges_epoch is None:
        return ""
    text = f" Ranges from epoch {result.ranges_epoch}"
    if result.weights_epoch is not None:
        text += f", weights from epoch {result.weights_epoch}"
        if result.weights_epoch > result.ranges_epoch:
            text += " (the ranges are older than the weights)"
    return text + "."


def _measured_on(validation_data, results):
    if validation_data is None:
        return "No validation data: sizes and latencies only."
    count = len(
        data_lib.as_list(data_lib.sample_inputs(validation_data, None))[0]
    )
    metrics = [r for r in results if r.quantized_metrics]
    what = (
        "metrics of the float Keras model and of each .tflite in LiteRT"
        if metrics
        else "activation histograms and errors"
    )
    return (
        f"Measured on {count} samples of the validation data "
        f"(`validation_data`): {what}. Latency: one sample, one thread, "
        "median of 50 runs."
    )


def _histogram_figures(ranges, tensors):
    """`[(caption, png bytes)]`: each point's histogram, range marked."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    points = [p for p in ranges if p in tensors] or list(ranges)
    figures = []
    for start in range(0, len(points), POINTS_PER_FIGURE):
        chunk = points[start : start + POINTS_PER_FIGURE]
        rows = -(-len(chunk) // FIGURE_COLUMNS)
        figure, axes = pyplot.subplots(
            rows,
            FIGURE_COLUMNS,
            figsize=(4 * FIGURE_COLUMNS, 2.6 * rows),
            squeeze=False,
        )
        for axis, point in zip(axes.flat, chunk):
            _histogram(axis, point, ranges[point], tensors.get(point))
        for axis in list(axes.flat)[len(chunk) :]:
            axis.axis("off")
        figure.tight_layout()
        caption = "Activation histograms and ranges"
        if len(points) > POINTS_PER_FIGURE:
            caption += f" ({start + 1}-{start + len(chunk)} of {len(points)})"
        figures.append((caption, _png(figure, pyplot)))
    return figures


def _histogram(axis, point, value_range, values):
    low, high = value_range
    if values is not None:
        values = np.ravel(values)
        axis.hist(values, bins=BINS, color="#1f77b4", log=True)
    for edge in (low, high):
        axis.axvline(edge, color="#d62728", linewidth=2)
    axis.set_title(f"{point}\n[{low:.3g}, {high:.3g}]", fontsize=9)
    axis.tick_params(labelsize=7)


def _error_figure(analysis):
    from matplotlib import pyplot

    has_layers = bool(analysis.layers)
    figure, axes = pyplot.subplots(
        1,
        2 if has_layers else 1,
        figsize=(12, 0.35 * len(analysis.points) + 1.5),
        squeeze=False,
    )
    points = list(reversed(analysis.points))
    axis = axes[0][0]
    axis.barh(
        [p.point for p in points],
        [min(p.sqnr_db, 100.0) for p in points],
        color="#1f77b4",
    )
    axis.set_xlabel("SQNR (dB), int8 against float; higher is better")
    if has_layers:
        layers = list(reversed(analysis.layers))
        axis = axes[0][1]
        axis.barh(
            [g.layer for g in layers],
            [g.gain for g in layers],
            color=["#2ca02c" if g.gain > 0 else "#7f7f7f" for g in layers],
        )
        axis.set_xlabel("output error removed by keeping the layer float")
    figure.tight_layout()
    return _png(figure, pyplot)


def _png(figure, pyplot):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    pyplot.close(figure)
    return buffer.getvalue()
