"""Runs the keras-quant benchmarks and prints their figures.

(a) `fit_overhead`: extra `fit` time of an observed model (goal <= 5%).
(b) `export_time`: int8 export from collected ranges vs the converter's
    calibration on 200 samples (goal: no slower).
(c) `accuracy_vs_converter`: int8 test accuracy vs float and vs the
    converter's calibration (goal: within 1 point of float, no worse than
    the converter).
(d) `qat_vs_tfmot`: float, post-training int8, keras-quant QAT and tfmot
    QAT on one architecture (goal: QAT within 0.5 points of tfmot).
(e) `accuracy_guard`: `mode="auto"` on a denoiser with a tight budget, and
    the range estimators on long-tailed activations.
(f) `zoo --subset`: MobileNetV2, a ViT and an LSTM in int8, int8_only and
    int16x8, beside the TFLite converter (`python benchmarks/zoo.py` runs
    all eleven architectures).
(g) `micro`: seven small models in int8_only for TensorFlow Lite for
    Microcontrollers, keras-quant's `target="micro"` export beside the
    converter's integer-only file.

Each prints its own report, with the command that reproduces it alone; a
summary of the headline figures follows. `make bench` runs this script.
Benchmarks print figures only; they assert nothing about them.
"""

import time

import accuracy_guard
import accuracy_vs_converter
import common
import export_time
import fit_overhead
import micro
import qat_vs_tfmot
import zoo

BENCHMARKS = {
    "fit_overhead": fit_overhead,
    "export_time": export_time,
    "accuracy_vs_converter": accuracy_vs_converter,
    "qat_vs_tfmot": qat_vs_tfmot,
    "accuracy_guard": accuracy_guard,
    "zoo": zoo,
    "micro": micro,
}


def parse_args(argv=None):
    """Parses the options, which are passed on to the benchmarks."""
    parser = common.make_parser(__doc__, repeats=5, seeds=3, seed=0)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(BENCHMARKS),
        default=list(BENCHMARKS),
        help="run only these benchmarks",
    )
    return parser.parse_args(argv)


def benchmark_argv(name, args):
    """The command line for one benchmark, from the shared options."""
    argv = ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    if name == "qat_vs_tfmot":  # its models need 30 epochs, its default
        return [
            "--batch-size",
            str(args.batch_size),
            "--seeds",
            str(args.seeds),
        ]
    if name == "zoo":
        return ["--subset"]
    if name == "micro":
        return argv
    if name in ("accuracy_vs_converter", "accuracy_guard"):
        return [*argv, "--seeds", str(args.seeds)]
    return [*argv, "--repeats", str(args.repeats), "--seed", str(args.seed)]


def print_summary(results, elapsed):
    """Prints the headline figures of the benchmarks that ran."""
    common.print_title(f"summary (the benchmarks took {elapsed:.0f} s)")
    printers = {
        "fit_overhead": _print_fit_overhead,
        "export_time": _print_export_time,
        "accuracy_vs_converter": _print_accuracy,
        "qat_vs_tfmot": _print_qat,
        "accuracy_guard": _print_guard,
        "zoo": _print_zoo,
        "micro": _print_micro,
    }
    for name, found in results.items():
        printers[name](found)


def _print_fit_overhead(found):
    print("(a) fit overhead vs plain model (goal <= +5%):")
    for key, label in (("fit", "whole fit"), ("epoch", "epoch 2..N")):
        figures = ", ".join(f"{k} {v:+.1f}%" for k, v in found[key].items())
        print(f"    {label}: {figures or 'n/a'}")


def _print_export_time(found):
    print(
        f"(b) export time keras-quant / converter: {found['ratio']:.2f}x "
        "(goal <= 1.00x)"
    )


def _print_accuracy(found):
    print(
        "(c) int8 test accuracy, mean drop from float in points "
        "(goal: keras-quant\n    <= 1.00 and <= each converter):"
    )
    for name, drop in found["mean_drop_points"].items():
        difference = found["mean_output_diff"][name] * 1e3
        print(
            f"    {name}: {drop:+.2f}  (mean |int8 - float| output "
            f"{difference:.3f} x 1e-3)"
        )


def _print_qat(found):
    mean = {key: 100 * value for key, value in found["mean"].items()}
    print("(d) QAT, mean test accuracy in %:")
    print(
        f"    float {mean['float']:.2f} (+5 epochs {mean['float_more']:.2f}), "
        f"int8 PTQ {mean['ptq']:.2f}, "
        f"keras-quant QAT {mean['keras_quant']:.2f}, "
        f"tfmot QAT {mean['tfmot']:.2f}"
    )


def _print_guard(found):
    print("(e) mode='auto', chosen per seed:")
    for task, per_seed in found["auto"].items():
        budget = found["budgets"][task]
        print(f"    {task.title} (budget {budget} {task.selection_unit}):")
        for seed, part in per_seed.items():
            chosen = part["selection"].chosen
            print(
                f"      seed {seed}: {chosen.label}, "
                f"{chosen.size_bytes / 1024:.1f} KB "
                f"(float16 {part['float16_bytes'] / 1024:.1f} KB), "
                f"{chosen.drop:+.2f}"
            )
    print("    estimators, mean test score over seeds:")
    for task, per_seed in found["estimators"].items():
        means = {
            column: task.scale
            * sum(f[column][0] for f in per_seed.values())
            / len(per_seed)
            for column in ("float", *accuracy_guard.ESTIMATORS)
        }
        figures = ", ".join(f"{k} {v:.2f}" for k, v in means.items())
        print(f"    {task.title} ({task.unit}): {figures}")


def _print_zoo(rows):
    done = [r for r in rows if r.get("tool") == "keras-quant"]
    ok = [r for r in done if r.get("status") == "ok"]
    print(f"(f) zoo subset: keras-quant exported {len(ok)} of {len(done)}")


def _print_micro(rows):
    ran = [r["name"] for r in rows if r["keras_quant"]["status"] == "yes"]
    converter = [r["name"] for r in rows if r["converter"]["status"] == "yes"]
    print(
        f"(g) micro: keras-quant's int8_only file ran in TFLM for {len(ran)} "
        f"of {len(rows)} models, the converter's for {len(converter)}"
    )


def main(argv=None):
    """Runs the selected benchmarks in order, then the summary.

    Args:
        argv: command-line arguments; None for `sys.argv[1:]`.

    Returns:
        `{benchmark name: its headline results}`.
    """
    args = parse_args(argv)
    start = time.perf_counter()
    results = {}
    for name, module in BENCHMARKS.items():
        if name in args.only:
            results[name] = module.main(benchmark_argv(name, args))
    print_summary(results, time.perf_counter() - start)
    return results


if __name__ == "__main__":
    main()
