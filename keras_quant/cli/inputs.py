"""What the command line reads: `.keras` models, `.npz` arrays, folders of
images, and `.tflite` files, each checked with a one-line error; and the
folders it writes, checked before any work."""

import contextlib
import io
import os
import stat
import sys
import zipfile

import numpy as np

from keras_quant.cli.outcomes import UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


CHUNK = 256

# What an array of samples must be, and what to say if it is not.
SAMPLE_CHECKS = (
    (
        lambda array: array.ndim >= 1,
        "is a single value (a 0-d array); expected one entry per sample",
    ),
    (
        lambda array: array.size > 0,
        "is empty (shape {shape}); expected at least one sample",
    ),
    (
        lambda array: array.dtype.kind in "biuf",
        "holds {dtype} values; expected numbers (bool, int or float)",
    ),
)


def needs_ranges(modes):
    from keras_quant.modes import MODES
    from keras_quant.modes import parse_mode

    return any(
        mode == "auto" or MODES[parse_mode(mode)].needs_ranges for mode in modes
    )


def prepared_model(args, needs_ranges):
    """The model to export: loaded, and calibrated if data is given."""
    model = load_model(args.model)  # checks the path before importing Keras
    from keras_quant.observation import observed_model

    if args.calibration_data:
        x = calibration_inputs(args, model)
        if observed_model.find_observers(model):
            observed_model.reset_ranges(model)
        else:
            model = observed_model.observe(model, args.estimator)
        calibrate(model, x)
    elif needs_ranges and not observed_model.find_observers(model):
        raise UsageError(
            f"{args.model} is a float model without ranges; the quantizing "
            "modes need --calibration-data (an .npz or a folder of images)"
        )
    return model


def calibrate(model, x):
    count = len(x)
    progress = Progress("calibrating", count)
    for start in range(0, count, CHUNK):
        model.predict(x[start : start + CHUNK], verbose=0)
        progress.update(min(start + CHUNK, count))
    progress.done()


def one_line(error, limit=300):
    """`error`'s message as one line of at most `limit` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:limit]


def load_model(path):
    path = existing(path, ".keras")
    if not zipfile.is_zipfile(path):
        raise UsageError(f"{path} is not a .keras file (not a zip archive)")
    import keras

    from keras_quant import _registration

    _registration.register()  # keras-quant's layers, before loading

    try:
        return keras.saving.load_model(path)
    except Exception as error:  # noqa: BLE001  one line for any cause
        raise UsageError(f"cannot load {path}: {one_line(error)}") from error


def existing(path, suffix):
    """`path`, once it is known to be a regular file ending in `suffix`:
    a named pipe, a device or a socket is refused before it is opened
    (reading a pipe nobody writes to waits forever)."""
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file")
    if os.path.isdir(path):
        raise UsageError(f"{path} is a folder; expected a {suffix} file")
    if not path.endswith(suffix):
        raise UsageError(f"{path}: expected a {suffix} file")
    check_regular(path, f"a {suffix} file")
    return path


# What a path that is not a regular file is, by `stat` test.
SPECIAL_FILES = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def check_regular(path, expected):
    """Raises unless `path` (its target, for a symbolic link) is a regular
    file, which reading cannot block on or run forever."""
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        raise UsageError(f"{path}: {error.strerror or error}") from error
    if stat.S_ISREG(mode):
        return
    kind = next(
        (name for test, name in SPECIAL_FILES if test(mode)), "a special file"
    )
    raise UsageError(
        f"{path} is {kind}, not a regular file; expected {expected}. Save "
        "the data to a file and pass that"
    )


def check_tflite_header(path):
    with open(path, "rb") as handle:
        header = handle.read(8)
    if header[4:8] != b"TFL3":
        raise UsageError(f"{path} is not a TFLite model (bad header)")


def read_tflite(path, inspection):
    check_tflite_header(path)
    try:
        return inspection.summarize(path), inspection.spec_violations(path)
    except Exception as error:  # noqa: BLE001  a corrupt file, any cause
        raise UsageError(f"cannot read {path}: {one_line(error)}") from error


def litert_lines_hidden(verbose):
    """A block in which what is printed to `sys.stderr` is dropped, unless
    `verbose`: LiteRT's log lines, re-printed when a call fails."""
    if verbose:
        return contextlib.nullcontext()
    return contextlib.redirect_stderr(io.StringIO())


def read_arrays(path):
    """`{name: array}` of an `.npz` file; object arrays are refused (they
    would be unpickled, running code from the file)."""
    if not path.endswith(".npz"):
        raise UsageError(f"{path}: expected an .npz file or a folder of images")
    existing(path, ".npz")
    try:
        stored = np.load(path, allow_pickle=False)
    except Exception as error:  # noqa: BLE001  a corrupt file, any cause
        raise UsageError(f"cannot read {path}: {one_line(error)}") from error
    if not isinstance(stored, np.lib.npyio.NpzFile):
        raise UsageError(
            f"{path} holds a single array, not named arrays; save it with "
            "np.savez(path, x=x, y=y)"
        )
    with stored:
        return {name: _member(path, stored, name) for name in stored.files}


def _member(path, stored, name):
    try:
        member = stored[name]
    except Exception as error:  # noqa: BLE001  a corrupt member, any cause
        raise UsageError(
            f"cannot read array {name!r} of {path}: {one_line(error)}"
        ) from error
    if not isinstance(member, np.ndarray):  # a member not saved by np.save
        raise UsageError(
            f"{path}: member {name!r} is not an array (not in .npy format); "
            "save the file with np.savez(path, x=x, y=y)"
        )
    return member


def read_labelled(path):
    """The checked `(x, y)` arrays of an `.npz` file."""
    arrays = read_arrays(path)
    missing = [name for name in ("x", "y") if name not in arrays]
    if missing:
        raise UsageError(
            f"{path} has arrays {sorted(arrays)}; expected 'x' (inputs) and "
            f"'y' (labels). Save it with np.savez(path, x=x, y=y)"
        )
    x = checked_samples(arrays["x"], f"{path}: 'x'")
    y = checked_samples(arrays["y"], f"{path}: 'y'")
    if len(x) != len(y):
        raise UsageError(
            f"{path}: 'x' has {len(x)} samples and 'y' {len(y)} labels; "
            "they must match"
        )
    return x, y


def checked_samples(array, where):
    """`array`, once it is known to hold samples (`SAMPLE_CHECKS`)."""
    for holds, problem in SAMPLE_CHECKS:
        if not holds(array):
            problem = problem.format(shape=array.shape, dtype=array.dtype)
            raise UsageError(f"{where} {problem}")
    return array


def check_fits_model(x, model, where):
    """Raises if the samples `x` cannot be fed to `model`'s one input."""
    if len(model.inputs) != 1:
        raise UsageError(
            f"the model takes {len(model.inputs)} inputs; the command line "
            "feeds one array 'x'. Use keras_quant's Python API"
        )
    expected = tuple(model.inputs[0].shape[1:])
    found = tuple(x.shape[1:])
    fits = len(found) == len(expected) and all(
        size is None or size == got for size, got in zip(expected, found)
    )
    if not fits:
        raise UsageError(
            f"{where} has samples of shape {found}; the model takes {expected}"
        )


def check_path_text(path, option):
    """`path`, once `files.check_path_text` found no NUL byte, no name too
    long and no `..` after a missing folder; its error as a one-line
    `UsageError` naming `option`."""
    from keras_quant.exporting import files

    try:
        return files.check_path_text(path, option)
    except (ValueError, OSError) as error:
        raise UsageError(one_line(error, limit=600)) from error


def output_folder(path, option):
    """`path`, a folder the command will write in: created if missing,
    checked before any work so a bad one costs nothing."""
    check_path_text(path, option)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(
            f"{option} {path} is a file; name a folder (it is created if "
            "missing)"
        )
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise UsageError(
            f"{option} {path}: cannot create the folder "
            f"({error.strerror or error}); choose one you can write to"
        ) from error
    if not os.access(path, os.W_OK):
        raise UsageError(
            f"{option} {path}: the folder is read-only; choose one you can "
            "write to"
        )
    return path


def calibration_inputs(args, model):
    path = args.calibration_data
    if os.path.isdir(path):
        x = images(path, model, args.image_scale)
    else:
        arrays = read_arrays(path)
        if "x" in arrays:
            x = arrays["x"]
        elif len(arrays) == 1:
            x = next(iter(arrays.values()))
        else:
            raise UsageError(
                f"{path} has arrays {sorted(arrays)}; name the inputs 'x'"
            )
    x = checked_samples(x, f"calibration data {path}")
    check_fits_model(x, model, f"calibration data {path}")
    return x[: args.samples].astype(model.inputs[0].dtype)


def images(folder, model, scale):
    """Images of a folder, decoded, resized and scaled to the model input."""
    import tensorflow as tf

    names = sorted(
        n for n in os.listdir(folder) if n.lower().endswith(IMAGE_SUFFIXES)
    )
    if not names:
        raise UsageError(f"{folder} holds no {'/'.join(IMAGE_SUFFIXES)} image")
    shape = model.inputs[0].shape
    if len(shape) != 4:
        raise UsageError(
            "a folder of images needs a model taking (height, width, "
            f"channels) images; this one takes {tuple(shape[1:])}"
        )
    height, width, channels = shape[1:]
    for name in names:
        check_regular(os.path.join(folder, name), "an image file")
    images = []
    progress = Progress("reading images", len(names))
    for count, name in enumerate(names, start=1):
        data = tf.io.read_file(os.path.join(folder, name))
        try:
            image = tf.io.decode_image(data, expand_animations=False)
        except tf.errors.InvalidArgumentError as error:
            raise UsageError(f"cannot decode {name} in {folder}") from error
        image = match_channels(tf, image, channels)
        image = tf.image.resize(tf.cast(image, "float32"), (height, width))
        images.append(image.numpy() * scale)
        progress.update(count)
    progress.done()
    return np.stack(images)


def match_channels(tf, image, channels):
    if image.shape[-1] == channels:
        return image
    if channels == 1:
        return tf.image.rgb_to_grayscale(image[..., :3])
    if channels == 3 and image.shape[-1] == 1:
        return tf.image.grayscale_to_rgb(image)
    if channels == 3:
        return image[..., :3]
    raise UsageError(
        f"images have {image.shape[-1]} channels; model {channels}"
    )


class Progress:
    """A progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, label, total):
        self.label, self.total = label, max(total, 1)
        self.shown = sys.stderr.isatty()

    def update(self, count):
        if self.shown:
            filled = int(30 * count / self.total)
            bar = "#" * filled + "." * (30 - filled)
            print(
                f"\r{self.label} [{bar}] {count}/{self.total}",
                end="",
                file=sys.stderr,
                flush=True,
            )

    def done(self):
        if self.shown:
            print(file=sys.stderr)


def progress_line(message):
    if sys.stderr.isatty():
        print(message, file=sys.stderr)


def litert_problem(path, invoke=False):
    """Why LiteRT cannot allocate (or, with `invoke`, run) the `.tflite` at
    `path`, tried in a child process so that a corrupt file that crashes
    LiteRT is a failed check, not a dead command (about 0.2 s); None if it
    can."""
    from keras_quant.conversion import isolation
    from keras_quant.errors import ExportError
    from keras_quant.runtime import litert

    try:
        return isolation.run_isolated(litert.problem, os.fspath(path), invoke)
    except ExportError as crash:
        return f"the file is corrupt: LiteRT crashed on it. {crash}"
