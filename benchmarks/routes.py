"""Benchmark: the two int8 routes on the zoo, to choose between them.

For each architecture (`zoo_models`), one observed model calibrated by
`predict` on the calibration inputs, converted to int8 twice:

- fake-quant: the observed graph with a fake-quant op at each range,
  read by the TFLite converter (`Route.FAKE_QUANT`);
- engine: the float `.tflite` quantized by ai-edge-quantizer from the same
  ranges, plus the replay sample for unobserved tensors (`Route.ENGINE`);

and, with the engine, int8_only. Prints output SQNR against Keras float on
held-out inputs, size, conversion time and whether every op is integer.
Run from the repository root:

    .venv/bin/python benchmarks/routes.py --arch mobilenet_v2 vit lstm
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras_quant.quiet  # noqa: E402, F401

# isort: split
import argparse  # noqa: E402
import time  # noqa: E402

import zoo  # noqa: E402
import zoo_models  # noqa: E402

import keras_quant  # noqa: E402
from keras_quant.conversion import routes  # noqa: E402
from keras_quant.modes import Mode  # noqa: E402

# Name -> conversion of a calibrated observed model to `.tflite` bytes.
CONVERSIONS = {
    "int8 fake-quant": lambda m: routes.ROUTES[routes.Route.FAKE_QUANT](
        m, Mode.INT8, None
    ),
    "int8 engine": lambda m: routes.ROUTES[routes.Route.ENGINE](
        m, Mode.INT8, None
    ),
    "int8_only engine": lambda m: routes.ROUTES[routes.Route.ENGINE](
        m, Mode.INT8_ONLY, "int8"
    ),
}


def run(arch, calibration, heldout):
    model = zoo_models.ARCHITECTURES[arch](seed=0)
    batch = zoo._batch(model)
    x = zoo_models.calibration_inputs(arch, calibration)
    held = zoo_models.heldout_inputs(arch, heldout)
    reference = model.predict(held, batch_size=batch, verbose=0)
    observed = keras_quant.observe(model)
    observed.predict(x, batch_size=batch, verbose=0)
    rows = []
    for name, convert in CONVERSIONS.items():
        start = time.perf_counter()
        try:
            tflite = convert(observed)
        except Exception as error:  # a benchmark records every failure
            rows.append((arch, name, zoo.describe(error)))
            continue
        seconds = time.perf_counter() - start
        found = zoo.measure(tflite, held, reference, batch)
        rows.append(
            (
                arch,
                name,
                f"{found['sqnr_db']:.1f} dB, {found['size'] / 1024:.0f} KB, "
                f"{seconds:.1f} s, all-integer {found['all_integer']}, "
                f"float ops {found['float_ops'][:4]}",
            )
        )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=zoo_models.SUBSET)
    parser.add_argument("--calibration", type=int, default=200)
    parser.add_argument("--heldout", type=int, default=64)
    args = parser.parse_args()
    for arch in args.arch:
        for row in run(arch, args.calibration, args.heldout):
            print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main()
