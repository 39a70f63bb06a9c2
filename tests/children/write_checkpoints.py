"""Writes checkpoints in a loop until killed, the way `ObservedModel.save`
does (`files.staged`, the `.quant.json` record last), with payloads that
prove their own completeness: the child of the kill test.

Each file holds an 8-byte generation, an 8-byte length, then that many
bytes drawn from `np.random.default_rng(generation)`.

    python tests/children/write_checkpoints.py FOLDER
"""

import os
import sys

import numpy as np

from keras_quant.exporting import checkpoint
from keras_quant.exporting import files

NAMES = ("m.keras", "m_int8.tflite", "m_float16.tflite")


def payload(generation, size):
    header = np.array([generation, size], "<u8").tobytes()
    return header + np.random.default_rng(generation).bytes(size)


def is_whole(data):
    """Whether `data` is a complete `payload`."""
    if len(data) < 16:
        return False
    generation, size = np.frombuffer(data[:16], "<u8")
    return data == payload(int(generation), int(size))


def main(folder):
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    paths = [os.path.join(folder, name) for name in NAMES]
    while True:
        generation = int(rng.integers(2**32))
        with files.staged():
            for path in paths:
                size = int(rng.integers(1 << 18, 1 << 21))
                files.write_atomically(path, payload(generation, size))
            checkpoint.write_record(paths[0], paths, {"generation": generation})
        print(generation, flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
