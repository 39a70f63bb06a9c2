"""What the command line prints: export results, `.tflite` summaries
and comparisons."""

import os
import string

from keras_quant.cli.outcomes import UsageError
from keras_quant.text import table


def output_path(args, mode):
    """Where `export` writes `mode`: `--output` with `{mode}` filled in,
    else `<model>_<mode>.tflite` beside the model."""
    if not args.output:
        return os.path.join(
            os.path.dirname(args.model) or ".",
            f"{stem(args.model)}_{mode}.tflite",
        )
    if len(args.modes) > 1 and "{mode}" not in args.output:
        raise UsageError(
            "several modes need '{mode}' in --output, so the files do "
            "not overwrite each other"
        )
    path = filled_template(args.output, mode)
    if os.path.isdir(path):
        raise UsageError(
            f"--output {path} is a folder; name a .tflite file in it, e.g. "
            f"{os.path.join(path, 'model.tflite')}"
        )
    return path


def filled_template(template, mode):
    """`template` with `{mode}` replaced by `mode` (str.format rules), once
    it is known to be a path that can be written: `{mode}` is its only
    field, read plainly (no attribute or index: `{mode.__class__}` would
    be filled in silently), and the filled path holds no NUL byte, no name
    longer than the file system takes and no `..` after a missing folder.
    """
    try:
        fields = [
            f"{{{name}:{spec}}}" if spec else f"{{{name}}}"
            for _, name, spec, _ in string.Formatter().parse(template)
            if name is not None and (name != "mode" or "{" in spec)
        ]
        if fields:
            raise KeyError(fields[0])
        path = template.format(mode=mode)
    except (IndexError, KeyError, ValueError, AttributeError) as error:
        raise UsageError(
            f"--output {template!r} cannot be filled in "
            f"({type(error).__name__}: {error}): the "
            "only name it may hold in braces is {mode}, as is (no attribute "
            "or index); write a literal brace twice, '{{' or '}}'"
        ) from error
    from keras_quant.cli import inputs

    return inputs.check_path_text(path, "--output")


def stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def describe(result):
    line = (
        f"wrote {result.path}: {result.mode.value}, "
        f"{result.size_bytes / 1024:.1f} KB ({result.size_ratio:.2f} of "
        "float32)"
    )
    if result.keep_float:
        line += f", float layers {list(result.keep_float)}"
    if result.keep_8bit:
        line += f", 8-bit layers {list(result.keep_8bit)}"
    if result.quantized_metrics:
        metrics = ", ".join(
            f"{name} {result.float_metrics[name]:.4f} -> {value:.4f}"
            for name, value in result.quantized_metrics.items()
        )
        line += f"; {metrics}"
    if result.micro is not None:
        line += "\n  " + micro_text(result.micro)
    return line


def micro_text(report):
    """One line on a `MicroReport`: the file as TFLM ran it."""
    text = (
        f"in TFLM ({report.runtime}): ran {report.samples} sample(s), "
        f"smallest arena {report.arena_bytes:,} bytes"
    )
    if report.metrics:
        text += ", " + ", ".join(
            f"{name} {value:.4f}" for name, value in report.metrics.items()
        )
    if report.max_step_difference is not None:
        text += (
            f"; largest difference from LiteRT {report.max_step_difference}"
            f" step(s), on {100 * report.differing_share:.2f}% of outputs"
        )
    return text


def comparison_text(found):
    """A `Comparison`: metrics side by side, then the output figures."""
    lines = []
    if found.float_metrics:
        rows = [("metric", "float", "tflite", "difference")]
        for name, f in found.float_metrics.items():
            q = found.quantized_metrics[name]
            rows.append((name, f"{f:.6g}", f"{q:.6g}", f"{q - f:+.6g}"))
        lines.append(table(rows))
    else:
        lines.append("metrics: none (the model has no compiled loss or metric)")
    lines += [
        f"samples: {found.samples}",
        f"largest |float - tflite| output: {found.max_abs_output_diff:.6g}",
        f"mean |float - tflite| output: {found.mean_abs_output_diff:.6g}",
        f"output SQNR: {found.output_sqnr_db:.2f} dB",
        f"largest output difference: {found.output_error_percent:.3g}% of "
        "the output range",
    ]
    return "\n".join(lines)


def summary_text(path, summary, violations, allocation_error=None):
    lines = [f"{path}: {summary.size_bytes / 1024:.1f} KB"]
    for label, indices in (
        ("input", summary.inputs),
        ("output", summary.outputs),
    ):
        for index in indices:
            lines.append(f"{label}: {tensor_text(summary.tensors[index])}")
    counts = {}
    for op in summary.ops:
        counts[op.name] = counts.get(op.name, 0) + 1
    lines.append(
        "ops: " + ", ".join(f"{name} x{n}" for name, n in counts.items())
    )
    lines.append("weights:")
    for op_name, weight, bias in summary.weights():
        lines.append(f"  {op_name}: {tensor_text(weight)}")
        if bias is not None:
            lines.append(f"    bias: {tensor_text(bias)}")
    lines.append("activations:")
    for tensor in summary.activations():
        lines.append(f"  {tensor_text(tensor)}")
    if allocation_error:
        lines.append(f"LiteRT allocation: FAILED: {allocation_error}")
    else:
        lines.append("LiteRT allocation: ok")
    if violations:
        lines.append("TFLite quantization spec: NOT followed")
        lines.extend(f"  {message}" for message in violations)
    else:
        lines.append("TFLite quantization spec: followed")
    return "\n".join(lines)


def tensor_text(tensor):
    text = f"'{tensor.name}' {tensor.dtype} {list(tensor.shape)}"
    if len(tensor.scales) == 1:
        text += (
            f" scale {float(tensor.scales[0]):.6g} zero point "
            f"{int(tensor.zero_points[0])}"
        )
    elif len(tensor.scales) > 1:
        text += (
            f" per-axis (dim {tensor.quantized_dimension}, "
            f"{len(tensor.scales)} scales {float(tensor.scales.min()):.3g}"
            f"..{float(tensor.scales.max()):.3g}, zero points "
            f"{sorted(set(int(z) for z in tensor.zero_points))})"
        )
    if tensor.block_size:
        text += f" in blocks of {tensor.block_size} input features"
    return text


def summary_dict(path, summary, violations, allocation_error=None):
    def tensor(info):
        return {
            "name": info.name,
            "dtype": info.dtype,
            "shape": list(info.shape),
            "scales": [float(s) for s in info.scales],
            "zero_points": [int(z) for z in info.zero_points],
            "quantized_dimension": info.quantized_dimension,
            "block_size": info.block_size,
        }

    return {
        "path": path,
        "size_bytes": summary.size_bytes,
        "inputs": [tensor(summary.tensors[i]) for i in summary.inputs],
        "outputs": [tensor(summary.tensors[i]) for i in summary.outputs],
        "ops": [op.name for op in summary.ops],
        "weights": [
            {"op": name, "weight": tensor(w), "bias": b and tensor(b)}
            for name, w, b in summary.weights()
        ],
        "activations": [tensor(t) for t in summary.activations()],
        "spec_violations": violations,
        "allocation_error": allocation_error,
    }
