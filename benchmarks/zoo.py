"""Benchmark: keras-quant and the TFLite converter on a zoo of architectures.

For each architecture of `zoo_models.ARCHITECTURES` (random weights,
BatchNormalization statistics from natural image crops) and each mode,
two exports of the same float model from the same calibration inputs:

- keras-quant: `observe(model)`, `observed.predict(calibration)` to
  collect ranges, then `keras_quant.export(observed, path, mode=mode)`;
- converter: `tf.lite.TFLiteConverter.from_keras_model(model)` with the
  calibration inputs, one sample per step, as `representative_dataset`:
  int8 = `optimizations=[DEFAULT]`; int8_only = that plus
  `supported_ops=[TFLITE_BUILTINS_INT8]` and int8 inputs and outputs;
  int16x8 = `supported_ops=[EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_
  INT16_WEIGHTS_INT8]`.

`--modes dynamic float16` adds two references that quantize no
activation (dynamic range; float16 weights): on random weights, a deep
network can amplify even weight rounding, and these show how much.

Each export, with its measurements, runs in a child process (this script
with `--one ARCH MODE TOOL`, printing one JSON line), so a converter that
crashes the process (TF's calibrator segfaults on batch-1 LSTM/GRU) or
hangs gives a "crashed" or "timeout" row, not a dead benchmark.

Measured per export: status (or the error's type and first line), export
time, size, SQNR of the LiteRT output against the Keras float output on
held-out inputs (pooled over all outputs: 10 log10(sum f^2 / sum (f-q)^2)),
top-1 agreement with float, whether the model is integer-only (no float
tensor outside the QUANTIZE of a model input and the DEQUANTIZE of a
model output) and single-thread latency (median of 20 invokes of one
sample). keras-quant rows also carry the time of the calibrating
`observed.predict` and of a plain `model.predict` on the same data (both
after a warm-up on the first and the last batch, which traces them).

The LiteRT interpreter is driven directly, not through
`keras_quant.run_tflite`, which would quantize int32 token ids with a zero
scale.

Run from the repository root:

    .venv/bin/python benchmarks/zoo.py --subset
    .venv/bin/python benchmarks/zoo.py --arch resnet lstm --modes int8
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import argparse
import contextlib
import io
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
from tables import print_table

MODES = ("int8", "int8_only", "int16x8")
# Not run by default: references without activation quantization, for the
# noise that quantizing weights alone adds.
EXTRA_MODES = ("dynamic", "float16")
CALIBRATED_MODES = frozenset(MODES)
TOOLS = ("keras-quant", "converter")
RESULT_MARK = "ZOO_RESULT "
LATENCY_RUNS = 20
PREDICT_BATCH = 32
RUN_BATCH = 64
SCRIPT = os.path.abspath(__file__)


# --------------------------------------------------------------------------
# One job (child process)


def run_job(arch, mode, tool, args):
    """Builds `arch`, exports it in `mode` with `tool`, measures the file.

    Args:
        arch: a key of `zoo_models.ARCHITECTURES`.
        mode: one of `MODES`.
        tool: one of `TOOLS`.
        args: parsed options (`calibration`, `heldout`, `seed`).

    Returns:
        A dict of measurements; `status` is "ok" or "failed", and a failed
        row names the `stage` ("export" or "measure") and the `error`.
    """
    import zoo_models

    row = {"arch": arch, "mode": mode, "tool": tool}
    start = time.perf_counter()
    model = zoo_models.ARCHITECTURES[arch](seed=args.seed)
    calibration = zoo_models.calibration_inputs(
        arch, args.calibration, args.seed
    )
    heldout = zoo_models.heldout_inputs(arch, args.heldout, args.seed)
    reference = model.predict(heldout, batch_size=_batch(model), verbose=0)
    row["build_s"] = time.perf_counter() - start
    stage = "export"
    try:
        tflite = EXPORTERS[tool](model, calibration, mode, row)
        stage = "measure"
        row.update(measure(tflite, heldout, reference, _batch(model)))
    except Exception as error:  # a benchmark records every failure
        row.update(status="failed", stage=stage, error=describe(error))
        return row
    row["status"] = "ok"
    return row


def _batch(model, default=RUN_BATCH):
    """The model's fixed batch size, or `default` if it has none."""
    return model.inputs[0].shape[0] or default


def describe(error):
    """`'TypeName: first line of the message'`."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]


def export_keras_quant(model, calibration, mode, row):
    """keras-quant's export; records calibration and export times in `row`.

    Returns:
        The `.tflite` model as bytes.
    """
    import keras_quant

    row["keras_quant"] = os.path.dirname(keras_quant.__file__)
    batch = _batch(model, PREDICT_BATCH)
    _warm_up(model, calibration, batch)
    row["predict_s"] = _seconds(model.predict, calibration, batch)
    observed = keras_quant.observe(model)
    _warm_up(observed, calibration, batch)
    row["calibration_s"] = _seconds(observed.predict, calibration, batch)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.tflite")
        start = time.perf_counter()
        keras_quant.export(observed, path, mode=mode)
        row["export_s"] = time.perf_counter() - start
        with open(path, "rb") as handle:
            return handle.read()


def _warm_up(model, x, batch):
    """Traces `model.predict` for the full and the last partial batch.

    Both are samples of `x`, so min/max ranges are the same as without
    the warm-up.
    """
    model.predict(x[:batch], batch_size=batch, verbose=0)
    if len(x) % batch:
        model.predict(x[-(len(x) % batch) :], batch_size=batch, verbose=0)


def _seconds(predict, x, batch):
    start = time.perf_counter()
    predict(x, batch_size=batch, verbose=0)
    return time.perf_counter() - start


def converter_settings(mode):
    """The converter attributes of the TFLite guide for `mode`."""
    import tensorflow as tf

    ops = tf.lite.OpsSet
    settings = {
        "dynamic": {},
        "float16": {"supported_types": [tf.float16]},
        "int8": {},
        "int8_only": {
            "supported_ops": [ops.TFLITE_BUILTINS_INT8],
            "inference_input_type": tf.int8,
            "inference_output_type": tf.int8,
        },
        "int16x8": {
            "supported_ops": [
                ops.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            ],
        },
    }
    return settings[mode]


def export_stock(model, calibration, mode, row):
    """The TFLite converter's own calibration; records `export_s`.

    Returns:
        The `.tflite` model as bytes.
    """
    import tensorflow as tf

    def representative_dataset():
        for i in range(len(calibration)):
            yield [calibration[i : i + 1]]

    start = time.perf_counter()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode in CALIBRATED_MODES:
        converter.representative_dataset = representative_dataset
    for name, value in converter_settings(mode).items():
        if name in ("supported_ops", "supported_types"):
            setattr(converter.target_spec, name, value)
        else:
            setattr(converter, name, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()):
            tflite = converter.convert()
    row["export_s"] = time.perf_counter() - start
    return tflite


EXPORTERS = {"keras-quant": export_keras_quant, "converter": export_stock}


# --------------------------------------------------------------------------
# Measuring a .tflite model


def measure(tflite, heldout, reference, batch):
    """Size, SQNR, top-1 agreement, integer-only check and latency."""
    outputs = run_tflite(tflite, heldout, batch)
    float_ops = float_op_names(tflite)
    return {
        "size": len(tflite),
        "sqnr_db": sqnr_db(reference, outputs),
        "top1_agreement": top1_agreement(reference, outputs),
        "all_integer": not float_ops,
        "float_ops": sorted(set(float_ops)),
        "latency_us": latency_seconds(tflite, heldout[:1]) * 1e6,
    }


def interpreter(tflite, num_threads=None):
    """A LiteRT interpreter for model bytes."""
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=tflite, num_threads=num_threads)


def quantize(values, detail):
    """Model inputs to the input tensor's type and quantization."""
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if not np.issubdtype(dtype, np.integer) or scale == 0:
        return np.asarray(values, dtype)
    info = np.iinfo(dtype)
    q = np.round(np.asarray(values, np.float64) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(values, detail):
    """An output tensor's values as float64, dequantized if quantized."""
    scale, zero_point = detail["quantization"]
    if np.issubdtype(values.dtype, np.integer) and scale != 0:
        return (values.astype(np.float64) - zero_point) * scale
    return values.astype(np.float64)


def _set_batch(runner, x):
    """Resizes the (single) input to `x`'s batch, allocates, sets `x`."""
    detail = runner.get_input_details()[0]
    shape = [len(x), *detail["shape"][1:]]
    if list(detail["shape"]) != shape:
        runner.resize_tensor_input(detail["index"], shape)
    runner.allocate_tensors()
    runner.set_tensor(detail["index"], quantize(x, detail))


def run_tflite(tflite, x, batch):
    """The model's (single) output on `x`, dequantized, in float64."""
    runner = interpreter(tflite)
    output = runner.get_output_details()[0]
    parts = []
    for start in range(0, len(x), batch):
        _set_batch(runner, x[start : start + batch])
        runner.invoke()
        parts.append(dequantize(runner.get_tensor(output["index"]), output))
    return np.concatenate(parts)


def sqnr_db(reference, quantized):
    """Pooled SQNR in dB: 10 log10(sum f^2 / sum (f - q)^2)."""
    reference = np.asarray(reference, np.float64)
    noise = np.sum((reference - quantized) ** 2)
    if noise == 0:
        return float("inf")
    return float(10 * np.log10(np.sum(reference**2) / noise))


def top1_agreement(reference, quantized):
    """Share of samples whose arg-max class is the float model's."""
    same = np.argmax(reference, -1) == np.argmax(quantized, -1)
    return float(np.mean(same))


def float_op_names(tflite):
    """Ops that read or write a float tensor, edge conversions excepted.

    The QUANTIZE of a model input and the DEQUANTIZE of a model output are
    how an integer model takes float inputs and gives float outputs; any
    other op touching a float tensor computes (or passes) floats.
    """
    runner = interpreter(tflite)
    floating = {
        d["index"]
        for d in runner.get_tensor_details()
        if np.issubdtype(np.dtype(d["dtype"]), np.floating)
    }
    inputs = {d["index"] for d in runner.get_input_details()}
    outputs = {d["index"] for d in runner.get_output_details()}
    names = []
    for op in runner._get_ops_details():
        if op["op_name"] == "QUANTIZE" and set(op["inputs"]) <= inputs:
            continue
        if op["op_name"] == "DEQUANTIZE" and set(op["outputs"]) <= outputs:
            continue
        if floating & (set(op["inputs"]) | set(op["outputs"])):
            names.append(op["op_name"])
    return names


def latency_seconds(tflite, sample, runs=LATENCY_RUNS):
    """Median single-thread time of one invoke on a one-sample batch."""
    runner = interpreter(tflite, num_threads=1)
    _set_batch(runner, sample)
    runner.invoke()  # warm-up
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        runner.invoke()
        timings.append(time.perf_counter() - start)
    return float(np.median(timings))


# --------------------------------------------------------------------------
# The driver (parent process)


def run_child(arch, mode, tool, args):
    """Runs one job in a child process and returns its row.

    A child that dies on a signal or exits without a result gives a
    "crashed" row, one that outlives `args.timeout` a "timeout" row; both
    carry the last line the child wrote to stderr.
    """
    command = [sys.executable, "-X", "faulthandler", SCRIPT]
    command += ["--one", arch, mode, tool]
    command += ["--calibration", str(args.calibration)]
    command += ["--heldout", str(args.heldout), "--seed", str(args.seed)]
    row = {"arch": arch, "mode": mode, "tool": tool}
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=args.timeout
        )
    except subprocess.TimeoutExpired as expired:
        row.update(status="timeout", error=_stderr_summary(expired.stderr))
    else:
        row.update(_child_result(done))
    row["job_s"] = time.perf_counter() - start
    return row


def _child_result(done):
    """The row a finished child printed, or a "crashed" row."""
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
    code = done.returncode
    how = (
        f"killed by {signal.Signals(-code).name}"
        if code < 0
        else f"exit code {code}"
    )
    summary = _stderr_summary(done.stderr)
    return {"status": "crashed", "error": f"{how}: {summary}".rstrip(": ")}


def _stderr_summary(text):
    """Where a child died, from its stderr.

    After a fatal signal, `-X faulthandler` prints the Python stack, most
    recent call first: that frame is returned. Otherwise the last line
    that is not one of TensorFlow's native log lines.
    """
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [line.strip() for line in (text or "").splitlines()]
    lines = [line for line in lines if line]
    frames = [line for line in lines if line.startswith("File ")]
    if any(line.startswith("Fatal Python error") for line in lines) and frames:
        return f"in {frames[0]}"[:300]
    native_log = re.compile(r"^[IWEF]\d{4} |^WARNING: All log messages")
    kept = [line for line in lines if not native_log.match(line)]
    return kept[-1][:300] if kept else ""


def progress_line(row):
    """One line per finished job, printed as the benchmark goes."""
    text = (
        f"[{row['job_s']:6.1f} s] {row['arch']:<13} {row['mode']:<9} "
        f"{row['tool']:<11} {row['status']}"
    )
    if row["status"] == "ok":
        return f"{text}  SQNR {row['sqnr_db']:.1f} dB"
    return f"{text}  {row.get('stage', '')} {row.get('error', '')}".rstrip()


# --------------------------------------------------------------------------
# Tables

HEADERS = [
    "mode",
    "kq ok",
    "kq SQNR dB",
    "stock SQNR dB",
    "kq size",
    "stock size",
    "kq export s",
    "stock export s",
    "kq latency us",
    "stock latency us",
    "all-integer kq/stock",
]


def _cell(row, key, fmt):
    if row is None or row.get("status") != "ok":
        return "-"
    return format(row[key], fmt)


def _status(row):
    if row is None:
        return "-"
    return "ok" if row["status"] == "ok" else row["status"].upper()


def _integer(row):
    if row is None or row.get("status") != "ok":
        return "-"
    return "yes" if row["all_integer"] else "no"


def table_rows(rows, arch):
    """Table cells for one architecture, one list per mode."""
    found = {(r["mode"], r["tool"]): r for r in rows if r["arch"] == arch}
    cells = []
    for mode in dict.fromkeys(r["mode"] for r in rows if r["arch"] == arch):
        kq = found.get((mode, "keras-quant"))
        stock = found.get((mode, "converter"))
        cells.append(
            [
                mode,
                _status(kq),
                _cell(kq, "sqnr_db", ".1f"),
                _cell(stock, "sqnr_db", ".1f")
                if _status(stock) == "ok"
                else _status(stock),
                _cell(kq, "size", ","),
                _cell(stock, "size", ","),
                _cell(kq, "export_s", ".1f"),
                _cell(stock, "export_s", ".1f"),
                _cell(kq, "latency_us", ".0f"),
                _cell(stock, "latency_us", ".0f"),
                f"{_integer(kq)}/{_integer(stock)}",
            ]
        )
    return cells


def failures(rows):
    """`(arch, mode, tool, status, error)` of each row that is not ok."""
    return [
        (r["arch"], r["mode"], r["tool"], r["status"], r.get("error", ""))
        for r in rows
        if r["status"] != "ok"
    ]


def markdown(rows, archs):
    """All architectures' tables, failures and job times as markdown."""
    lines = ["| arch | " + " | ".join(HEADERS) + " |"]
    lines.append("|" + " --- |" * (len(HEADERS) + 1))
    for arch in archs:
        for cells in table_rows(rows, arch):
            lines.append(f"| {arch} | " + " | ".join(cells) + " |")
    found = failures(rows)
    if found:
        lines += ["", "| arch | mode | tool | status | error |"]
        lines.append("|" + " --- |" * 5)
        for failure in found:
            text = [str(x).replace("|", "\\|") for x in failure]
            lines.append("| " + " | ".join(text) + " |")
    lines += ["", "| arch | mode | tool | job s |", "|" + " --- |" * 4]
    for r in rows:
        lines.append(
            f"| {r['arch']} | {r['mode']} | {r['tool']} | {r['job_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Command line


def parse_args(argv=None):
    """Parses the options (see `--help`)."""
    import zoo_models

    names = list(zoo_models.ARCHITECTURES)
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--arch", nargs="+", choices=names, default=names)
    parser.add_argument("--subset", action="store_true", help="SUBSET only")
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=MODES + EXTRA_MODES,
        default=MODES,
        help="dynamic and float16 are references, not run by default",
    )
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=TOOLS)
    parser.add_argument(
        "--calibration", type=int, default=200, help="calibration samples"
    )
    parser.add_argument(
        "--heldout", type=int, default=64, help="held-out samples for SQNR"
    )
    parser.add_argument("--seed", type=int, default=0, help="weights, data")
    parser.add_argument(
        "--timeout", type=float, default=900, help="seconds per job"
    )
    parser.add_argument("--markdown", help="write the tables here")
    parser.add_argument("--json", help="write all rows here")
    parser.add_argument(
        "--one",
        nargs=3,
        metavar=("ARCH", "MODE", "TOOL"),
        help="run one job in this process (what the children run)",
    )
    args = parser.parse_args(argv)
    if args.one:
        _check_job(parser, args.one, names)
    if args.subset:
        args.arch = list(zoo_models.SUBSET)
    return args


def _check_job(parser, job, names):
    """Stops with a usage error if `--one ARCH MODE TOOL` names no job."""
    for value, valid in zip(job, (names, MODES + EXTRA_MODES, TOOLS)):
        if value not in valid:
            parser.error(f"--one: expected one of {valid}, got {value!r}")


def run_all(args):
    """Runs every (arch, mode, tool) job in a child; prints, writes files."""
    rows = []
    start = time.perf_counter()
    for arch in args.arch:
        for mode in args.modes:
            for tool in args.tools:
                rows.append(run_child(arch, mode, tool, args))
                print(progress_line(rows[-1]), flush=True)
        print()
        print(f"{arch}:")
        print_table(HEADERS, table_rows(rows, arch))
        print(flush=True)
    print(f"{len(rows)} jobs in {time.perf_counter() - start:.0f} s")
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(markdown(rows, args.arch))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)
    return rows


def main(argv=None):
    """Runs the benchmark, or one job with `--one ARCH MODE TOOL`."""
    sys.path.insert(0, os.path.dirname(SCRIPT))
    args = parse_args(argv)
    if args.one:
        row = run_job(*args.one, args)
        print(RESULT_MARK + json.dumps(row), flush=True)
        return [row]
    return run_all(args)


if __name__ == "__main__":
    main()
