"""Fuzzing the `keras-quant` command line with corrupt inputs.

From four valid seed files (a `.tflite`, a float and an observed `.keras`
and an `.npz`), a seeded NumPy generator derives several hundred broken
ones: flipped bits, overwritten bytes, truncations, random bytes, empty
files, wrong extensions, `.keras` archives with garbage members, `.npz`
files with wrong keys, dtypes, shapes or pickled object arrays, and random
argument lists; then hostile inputs given to a command that would
otherwise succeed: named pipes in place of each file, `.npz` members that
are not arrays, 0-d members, NaN or infinite data, destinations no file
can be written to, and observed `.keras` files whose saved observer state
was edited. Each case runs in this process through `cli.main`; none may
let an exception out, print a traceback, exit with a code other than 0, 1
or 2, fail with more or less than one line on stderr (or as unexpected, a
bug), or leave a file behind when it fails; none of the hostile inputs
may pass (exit 0), and no named pipe may be opened.

Most cases aim at `inspect` and at the checks made before a model loads,
which cost milliseconds; the cases that load the `.keras` model, or let
LiteRT allocate a `.tflite` in a child process (`inputs.litert_problem`), cost a
fraction of a second each and are fewer.
"""

import collections
import io
import os
import re
import zipfile

import h5py
import keras
import numpy as np
import pytest
from ai_edge_litert.schema_py_generated import BuiltinOperator
from ai_edge_litert.tools import flatbuffer_utils

import keras_quant
from keras_quant import cli
from tests.conftest import small_cnn
from tests.test_cli import PipeWriter
from tests.test_cli import npz_bytes

SEED = 2024

# Numbers an option may be given: good, bad and absurd.
NUMBER_TEXTS = (
    "1",
    "0",
    "2.5",
    "-1",
    "nan",
    "inf",
    "-inf",
    "1e309",
    "abc",
    "",
    "99999999999999999999",
    "0x10",
    "1_000",
    " 3 ",
)

MODE_TEXTS = (
    "int8",
    "float16",
    "auto",
    "int16x8",
    "dynamic",
    "bogus",
    "INT8",
    "",
)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory, digits):
    """The valid seed files: model.keras (float), observed.keras (its
    observed model, calibrated), model.tflite (int8), data.npz."""
    folder = tmp_path_factory.mktemp("fuzz_seeds")
    keras.utils.set_random_seed(0)
    model = small_cnn(name="fuzz_cnn")
    model.save(folder / "model.keras")
    observed = keras_quant.observe(model, save_modes=())
    observed.predict(digits["val"][0][:64], verbose=0)
    keras_quant.export(observed, folder / "model.tflite")
    with pytest.warns(UserWarning, match="input rows"):
        observed.save(folder / "observed.keras")
    x, y = digits["test"]
    np.savez(folder / "data.npz", x=x[:16], y=y[:16])
    (folder / "junk.keras").write_bytes(b"not a zip archive")
    (folder / "a_folder.tflite").mkdir()
    return folder


class Case:
    """What a case maker draws on: the shared random generator `rng`, the
    valid files in `seeds`, and `folder` to write the case's own files in
    (named after its `index`)."""

    def __init__(self, rng, seeds, folder, index, pipes=None):
        self.rng, self.seeds, self.folder = rng, seeds, folder
        self.index = index
        self.pipes = pipes  # a `PipeWriter`, for `pipe`

    def pipe(self, suffix):
        """A named pipe named for the case, nobody writing to it (the
        `PipeWriter` answers a reader that waits on it with an empty
        file, so that a command that opens it ends)."""
        path = self.folder / f"case{self.index}{suffix}"
        os.mkfifo(path)
        self.pipes.paths.append(str(path))
        return str(path)

    def output(self):
        """An `--output` pattern for the case's `.tflite` files."""
        return str(self.folder / f"case{self.index}_out_{{mode}}.tflite")

    def report_folder(self):
        return str(self.folder / f"case{self.index}_report")

    def seed(self, name):
        return (self.seeds / name).read_bytes()

    def write(self, suffix, data):
        path = self.folder / f"case{self.index}{suffix}"
        path.write_bytes(bytes(data))
        return str(path)

    def integer(self, low, high):
        return int(self.rng.integers(low, high))

    def pick(self, choices):
        return choices[self.integer(0, len(choices))]

    def valid(self, name):
        return str(self.seeds / name)

    def compare(self, keras_path=None, tflite=None, data=None):
        return [
            "compare",
            keras_path or self.valid("model.keras"),
            tflite or self.valid("model.tflite"),
            "--data",
            data or self.valid("data.npz"),
        ]


def flipped_bits(case, data):
    data = bytearray(data)
    for _ in range(case.integer(1, 9)):
        data[case.integer(0, len(data))] ^= 1 << case.integer(0, 8)
    return data


def overwritten_bytes(case, data):
    data = bytearray(data)
    for _ in range(case.integer(1, 17)):
        data[case.integer(8, len(data))] = case.integer(0, 256)
    return data


def truncated(case, data):
    return data[: case.integer(0, len(data))]


def random_bytes(case, header=b""):
    body = case.rng.integers(0, 256, case.integer(0, 4096), dtype=np.uint8)
    return header + body.tobytes()


def inspect(case, path):
    return ["inspect", path] + (["--json"] if case.integer(0, 2) else [])


# --- .tflite: `inspect` (LiteRT allocates in a child process) -------------


def tflite_bit_flips(case):
    data = flipped_bits(case, case.seed("model.tflite"))
    return inspect(case, case.write(".tflite", data))


def tflite_byte_writes(case):
    data = overwritten_bytes(case, case.seed("model.tflite"))
    return inspect(case, case.write(".tflite", data))


def tflite_truncations(case):
    data = truncated(case, case.seed("model.tflite"))
    return inspect(case, case.write(".tflite", data))


def tflite_opcode_swaps(case):
    """A valid flatbuffer whose ops are not what they say: one operator
    code changed to another builtin op, SPLIT half the time. LiteRT trusts
    the ops, and some swaps crash it (SIGSEGV) when it allocates: SPLIT
    in place of QUANTIZE or MAX_POOL_2D reads a second input the op does
    not have."""
    model = flatbuffer_utils.convert_bytearray_to_object(
        bytearray(case.seed("model.tflite"))
    )
    code = case.pick(model.operatorCodes)
    op = case.pick([case.integer(0, 127), BuiltinOperator.SPLIT])
    code.builtinCode = code.deprecatedBuiltinCode = op
    data = flatbuffer_utils.convert_object_to_bytearray(model)
    return inspect(case, case.write(".tflite", data))


def tflite_random_bytes(case):
    header = case.pick([b"", b"\x1c\x00\x00\x00TFL3"])
    return inspect(case, case.write(".tflite", random_bytes(case, header)))


# --- files that are empty, or named for another kind ---------------------


def empty_files(case):
    empty = {suffix: case.write(suffix, b"") for suffix in EMPTY_SUFFIXES}
    return case.pick(
        [
            ["inspect", empty[".tflite"]],
            case.compare(keras_path=empty[".keras"]),
            case.compare(tflite=empty[".tflite"]),
            case.compare(data=empty[".npz"]),
            ["export", empty[".keras"]],
        ]
    )


EMPTY_SUFFIXES = (".tflite", ".keras", ".npz")


def wrong_extensions(case):
    seed = case.pick(["model.tflite", "model.keras", "data.npz"])
    suffix = case.pick([".tflite", ".keras", ".npz", ".txt", ""])
    path = case.write(suffix, case.seed(seed))
    return case.pick(
        [
            ["inspect", path],
            case.compare(keras_path=path),
            case.compare(tflite=path),
            case.compare(data=path),
            ["export", path, "-m", "float16"],
        ]
    )


# --- .npz: `compare --data` -----------------------------------------------


def npz_variants(case):
    """An .npz whose arrays are wrong in one way (`NPZ_ARRAYS`), and one
    time in four whose bytes are corrupt too; `--max-drop` half the time."""
    name = case.pick(sorted(NPZ_ARRAYS))
    buffer = io.BytesIO()
    np.savez(buffer, **NPZ_ARRAYS[name](case))
    data = buffer.getvalue()
    corrupt = case.pick([None, None, None, flipped_bits, truncated])
    if corrupt is not None:
        data = corrupt(case, data)
    argv = case.compare(data=case.write(".npz", data))
    return argv + case.pick([[], ["--max-drop", case.pick(NUMBER_TEXTS)]])


def samples(case, shape=(8, 8, 1), dtype="float32"):
    return case.rng.random((case.integer(1, 5), *shape)).astype(dtype)


def labelled(x):
    return {"x": x, "y": np.zeros(len(x), "int32")}


# Arrays for `npz_variants`, each broken in one way.
NPZ_ARRAYS = {
    "no_arrays": lambda case: {},
    "wrong_keys": lambda case: {"inputs": samples(case), "labels": [1]},
    "only_x": lambda case: {"x": samples(case)},
    "zero_d": lambda case: {"x": np.float32(1), "y": np.int32(1)},
    "empty": lambda case: {"x": samples(case)[:0], "y": np.zeros(0)},
    "strings": lambda case: {"x": np.array(["a", "b"]), "y": np.zeros(2)},
    "complex": lambda case: {"x": samples(case, dtype="complex64"), "y": [0]},
    "objects": lambda case: {
        "x": np.array([{"a": 1}, None], dtype=object),
        "y": np.zeros(2),
    },
    "lengths_differ": lambda case: {
        "x": samples(case),
        "y": np.zeros(case.integer(6, 9)),
    },
    "sample_shape": lambda case: labelled(
        samples(case, shape=(case.integer(1, 9),))
    ),
    "label_shape": lambda case: {
        "x": np.zeros((3, 8, 8, 1), "float32"),
        "y": case.rng.random((3, case.integer(2, 20))),
    },
    "float64_and_bool": lambda case: {
        "x": samples(case, dtype="float64")[:2] > 0.5,
        "y": np.ones(2),
    },
    "nan_inputs": lambda case: {
        "x": np.full((2, 8, 8, 1), np.nan, "float32"),
        "y": np.zeros(2, "int32"),
    },
}


def npy_instead_of_npz(case):
    buffer = io.BytesIO()
    np.save(buffer, samples(case))
    return case.compare(data=case.write(".npz", buffer.getvalue()))


# --- hostile inputs, to commands that would succeed without them --------


def named_pipes(case):
    """A named pipe in place of one file a command reads."""
    tflite, keras_path, data = (
        case.pipe(s) for s in (".tflite", ".keras", ".npz")
    )
    valid = case.valid("model.keras")
    export = ["export", "-m", "float16", "-o", case.output()]
    return case.pick(
        [
            inspect(case, tflite),
            ["inspect", tflite, "--target", "edgetpu"],
            case.compare(tflite=tflite),
            case.compare(keras_path=keras_path),
            case.compare(data=data),
            [*export, keras_path],
            [*export, valid, "--validation-data", data],
            [*export, valid, "--calibration-data", data],
            ["report", valid, "--data", data, "-o", case.report_folder()],
        ]
    )


def hostile_npz(case):
    """An .npz whose 'x' or 'y' is not an array of finite samples
    (`HOSTILE_NPZ`), to every command that reads one; `compare` with a
    gate, which NaN figures must fail."""
    x = samples(case)
    y = np.zeros(len(x), "int32")
    member = case.pick(sorted(HOSTILE_NPZ))
    data = case.write(".npz", npz_bytes(**HOSTILE_NPZ[member](case, x, y)))
    valid = case.valid("model.keras")
    export = ["export", valid, "-o", case.output()]
    mode = case.pick(["float16", "auto"])
    report = ["report", valid, "-m", "float16", "-o", case.report_folder()]
    commands = [
        case.compare(data=data) + ["--max-drop", "1"],
        [*export, "-m", mode, "--validation-data", data],
        [*report, "--data", data],
    ]
    if member.endswith("_x") and not member.startswith("nan"):
        commands.append([*export, "--calibration-data", data])
    return case.pick(commands)


def hostile_outputs(case):
    """`--output` or `--report-dir` that no file can be written to: through
    a folder that does not exist and back ('..'), a name too long, a
    field reading an attribute or an index, a NUL byte."""
    folder = case.folder
    long_name = "o" * case.integer(256, 400)
    output = case.pick(
        [
            f"{folder}/missing{case.index}/../o{case.index}.tflite",
            f"{folder}/{long_name}.tflite",
            f"{folder}/{long_name}/o.tflite",
            f"{folder}/o{{mode:>{case.integer(250, 600)}}}.tflite",
            f"{folder}/o{{mode.__class__.__name__}}.tflite",
            f"{folder}/o{{mode[0]}}.tflite",
            f"{folder}/o\0{case.index}.tflite",
        ]
    )
    argv = ["export", case.valid("model.keras"), "-m", "float16"]
    if case.integer(0, 4):
        return argv + ["-o", output]
    report = case.pick(
        [
            f"{folder}/missing{case.index}/../r",
            f"{folder}/{long_name}",
            f"{folder}/r\0{case.index}",
        ]
    )
    return argv + ["-o", case.output(), "--report-dir", report]


def spoilt(values, case, bad):
    values = values.astype("float32")
    flat = values.reshape(-1)
    flat[case.integer(0, flat.size) :] = bad
    return values


# What `hostile_npz` puts in an .npz: members that are not arrays (raw
# bytes), 0-d arrays, a pickled object array, NaN or infinite values.
HOSTILE_NPZ = {
    "raw_x": lambda case, x, y: {"x": random_bytes(case, b"x"), "y": y},
    "raw_y": lambda case, x, y: {"x": x, "y": random_bytes(case, b"y")},
    "zero_d_x": lambda case, x, y: {"x": np.float32(0.5), "y": y},
    "zero_d_y": lambda case, x, y: {"x": x, "y": np.int32(case.integer(0, 9))},
    "pickled_y": lambda case, x, y: {
        "x": x,
        "y": np.array({"a": case.integer(0, 9)}, dtype=object),
    },
    "nan_x": lambda case, x, y: {
        "x": spoilt(x, case, case.pick([np.nan, np.inf, -np.inf])),
        "y": y,
    },
    "nan_y": lambda case, x, y: {
        "x": x,
        "y": spoilt(y, case, case.pick([np.nan, np.inf, -np.inf])),
    },
}


# --- .keras: zip archives with garbage members ---------------------------


def keras_garbage_members(case):
    source = zipfile.ZipFile(io.BytesIO(case.seed("model.keras")))
    names = source.namelist()
    victim = case.pick(names)
    change = case.pick(MEMBER_CHANGES)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            data = source.read(name)
            if name == victim:
                data = change(case, data)
            if data is not None:
                archive.writestr(name, bytes(data))
        if case.integer(0, 4) == 0:
            archive.writestr("garbage.bin", random_bytes(case))
    return case.compare(keras_path=case.write(".keras", buffer.getvalue()))


MEMBER_CHANGES = (
    overwritten_bytes,
    truncated,
    lambda case, data: random_bytes(case),
    lambda case, data: None,  # the member is left out
)


def keras_bit_flips(case):
    data = flipped_bits(case, case.seed("model.keras"))
    return case.compare(keras_path=case.write(".keras", data))


# --- .keras: an observer's saved state edited -----------------------------

WEIGHTS = "model.weights.h5"
OBSERVER_VARIABLES = re.compile(r"observer(_\d+)?/vars$")


def tampered_states(case):
    """The observed seed with one observer's saved state edited (decision
    D52): NaN or infinite values, a range beyond any activation, a
    reversed range, a negative count, or a replay sample of another
    shape. Loading it must fail, for `export` and `compare` alike."""
    source = zipfile.ZipFile(io.BytesIO(case.seed("observed.keras")))
    members = {name: source.read(name) for name in source.namelist()}
    buffer = io.BytesIO(members[WEIGHTS])
    with h5py.File(buffer, "r+") as weights:
        found = []
        weights.visit(
            lambda name: (
                found.append(name) if OBSERVER_VARIABLES.search(name) else None
            )
        )
        case.pick(EDITED_STATES)(case, weights[case.pick(sorted(found))])
    members[WEIGHTS] = buffer.getvalue()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as target:
        for name, data in members.items():
            target.writestr(name, data)
    path = case.write(".keras", archive.getvalue())
    if case.integer(0, 2):
        return ["export", path, "-m", "int8", "-o", case.output()]
    return case.compare(keras_path=path)


def _set(variables, index, value):
    dataset = variables[str(index)]
    dataset[...] = np.asarray(value, dataset.dtype)


def _replay_of_another_shape(case, variables):
    if "6" not in variables:  # this observer keeps no replay sample
        return _set(variables, 2, -case.integer(1, 99))
    rows = variables["6"][...]
    del variables["6"]
    variables.create_dataset("6", data=rows[: case.integer(1, len(rows))])


# The edits, each of one saved value: 0 min_, 1 max_, 2 and 3 counts,
# 6 the replay sample.
EDITED_STATES = (
    lambda case, v: _set(v, case.integer(0, 2), case.pick(NON_FINITE)),
    lambda case, v: _set(v, 1, case.pick([3e38, 1e16, 1e30])),
    lambda case, v: _set(v, 0, -case.pick([3e38, 1e16, 1e30])),
    lambda case, v: _set(v, 0, float(v["1"][...]) + case.integer(1, 9)),
    lambda case, v: _set(v, case.integer(2, 4), -case.integer(1, 99)),
    _replay_of_another_shape,
)
NON_FINITE = (np.nan, np.inf, -np.inf)


# --- random argument lists ------------------------------------------------


def random_arguments(case):
    """A command with random options and values, from pools of good and
    bad ones; a required option is left out one time in eight. `export`
    and `report` never get the valid model, so none runs a (slow)
    conversion."""
    command = case.pick(sorted(ARGUMENTS))
    positional, required, options = ARGUMENTS[command]
    argv = [command] + [case.pick(pool(case)) for pool in positional]
    for option, pool in required:
        if case.integer(0, 8):
            argv += [option, case.pick(pool(case))]
    for _ in range(case.integer(0, 4)):
        option, pool = case.pick(options)
        argv += [option] if pool is None else [option, case.pick(pool(case))]
    if case.integer(0, 8) == 0:
        argv.insert(case.integer(0, len(argv) + 1), case.pick(STRAY))
    return argv


STRAY = ("--bogus", "-", "--", "-x", "--json=1", "é", "a" * 5000, "--help")


def tflite_paths(case):
    return [
        case.valid("model.tflite"),
        case.valid("a_folder.tflite"),
        "missing.tflite",
        case.valid("data.npz"),
        "",
    ]


def keras_paths(case):
    return [case.valid("model.keras")] + unusable_keras_paths(case)


def unusable_keras_paths(case):
    return [
        case.valid("junk.keras"),
        "missing.keras",
        case.valid("data.npz"),
        str(case.seeds),
    ]


def data_paths(case):
    return [
        case.valid("data.npz"),
        case.valid("model.keras"),
        "missing.npz",
        str(case.seeds),
        "/dev/null",
    ]


def numbers(case):
    return NUMBER_TEXTS


def modes(case):
    return MODE_TEXTS


def outputs(case):
    folder = case.folder
    return [
        str(folder / "o{mode}.tflite"),
        str(folder / "o{0}.tflite"),
        str(folder / "o{x}.tflite"),
        str(folder),
        "/proc/x/o.tflite",
        str(folder / "o{.tflite"),
        "o.keras",
    ]


def folders(case):
    return [
        str(case.folder / "report"),
        case.valid("model.keras"),
        "/proc/keras-quant-report",
        "",
    ]


def words(case):
    return ["minmax", "percentile", "mse", "cpu", "int8", "uint8", "bogus"]


# Per command: pools of its positional arguments; its required options,
# (option, pool); its other options, (option, pool, or None for a flag).
ARGUMENTS = {
    "inspect": ([tflite_paths], [], [("--json", None)]),
    "compare": (
        [keras_paths, tflite_paths],
        [("--data", data_paths)],
        [("--max-drop", numbers), ("--max-accuracy-drop", numbers)],
    ),
    "export": (
        [unusable_keras_paths],
        [],
        [
            ("-m", modes),
            ("-o", outputs),
            ("--calibration-data", data_paths),
            ("--validation-data", data_paths),
            ("--io-dtype", words),
            ("--max-accuracy-drop", numbers),
            ("--target", words),
            ("--report-dir", folders),
            ("--estimator", words),
            ("--samples", numbers),
            ("--image-scale", numbers),
        ],
    ),
    "report": (
        [unusable_keras_paths],
        [("--data", data_paths)],
        [
            ("-m", modes),
            ("-o", folders),
            ("--samples", numbers),
            ("--image-scale", numbers),
        ],
    ),
}


# How many cases of each kind.
CASES = {
    tflite_bit_flips: 140,
    tflite_byte_writes: 70,
    tflite_truncations: 60,
    tflite_opcode_swaps: 30,
    tflite_random_bytes: 40,
    empty_files: 10,
    wrong_extensions: 25,
    npz_variants: 70,
    npy_instead_of_npz: 5,
    keras_garbage_members: 20,
    keras_bit_flips: 15,
    random_arguments: 120,
    named_pipes: 45,
    hostile_npz: 60,
    hostile_outputs: 25,
    tampered_states: 30,
}

# The case makers whose every case must fail (exit 1 or 2).
HOSTILE = (named_pipes, hostile_npz, hostile_outputs, tampered_states)


def all_cases():
    """The case maker of every case, in a fixed order."""
    return [make for make, count in CASES.items() for _ in range(count)]


def test_there_are_at_least_500_cases():
    assert len(all_cases()) >= 500


def one_error_line(err):
    """Whether `err` is one error line (argument errors included: no
    usage block before it)."""
    lines = err.splitlines()
    return len(lines) == 1 and bool(ERROR_LINE.match(lines[0]))


ERROR_LINE = re.compile(r"keras-quant( [a-z]+)?: error: \S")


def files_under(*folders):
    """The paths of every file (folders aside) under `folders`."""
    return {
        os.path.join(root, name)
        for folder in folders
        for root, _, names in os.walk(folder)
        for name in names
    }


@pytest.mark.slow
def test_no_input_makes_a_traceback(seeds, tmp_path, capfd):
    rng = np.random.default_rng(SEED)
    problems, counts = [], collections.Counter()
    with PipeWriter([]) as pipes:
        for number, make in enumerate(all_cases()):
            argv = make(Case(rng, seeds, tmp_path, number, pipes))
            before = files_under(tmp_path, seeds)
            try:
                code = cli.main(argv)
            except BaseException as error:  # noqa: BLE001  what escaped main
                code = f"raised {type(error).__name__}: {error}"
            out, err = capfd.readouterr()
            left = sorted(files_under(tmp_path, seeds) - before)
            found = {
                "traceback": "Traceback" in out + err,
                "bad exit": code not in (0, 1, 2),
                "not one line": code in (1, 2) and not one_error_line(err),
                "orphan": code != 0 and bool(left),
                "silent pass": code == 0 and make in HOSTILE,
                "unexpected": "please report it" in err,
            }
            counts.update(
                ["case", f"exit {code}", *(k for k, v in found.items() if v)]
            )
            counts["hostile"] += make in HOSTILE
            if any(found.values()):
                problems.append(
                    f"{[k for k, v in found.items() if v]} {make.__name__} "
                    f"{argv!r:.300}: {code} {err:.300} left {left}"
                )
        counts["pipes opened"] = pipes.opened
    summary = ", ".join(
        f"{counts[key]} {key}"
        for key in ("case", "hostile", "traceback", "orphan", "silent pass")
        + ("unexpected", "not one line", "bad exit", "pipes opened")
    )
    exits = {k: v for k, v in sorted(counts.items()) if k.startswith("exit")}
    with capfd.disabled():
        print(f"\ncommand-line fuzz: {summary}; {exits}")
    assert problems == []
    assert pipes.opened == 0  # no command opened a named pipe
