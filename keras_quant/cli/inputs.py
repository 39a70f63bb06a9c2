"""What the command line reads: `.keras` models, `.npz` arrays, folders of
images, and `.tflite` files, each checked with a one-line error."""

import os
import sys
import zipfile

import numpy as np

from keras_quant.cli.outcomes import UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


CHUNK = 256


def needs_ranges(modes):
    from keras_quant.modes import MODES
    from keras_quant.modes import parse_mode

    return any(
        mode == "auto" or MODES[parse_mode(mode)].needs_ranges for mode in modes
    )


def prepared_model(args, needs_ranges):
    """The model to export: loaded, and calibrated if data is given."""
    from keras_quant.observation import observed_model

    model = load_model(args.model)
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
        reason = str(error).strip().splitlines()[0][:300]
        raise UsageError(f"cannot load {path}: {reason}") from error


def existing(path, suffix):
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file")
    if os.path.isdir(path):
        raise UsageError(f"{path} is a folder; expected a {suffix} file")
    if not path.endswith(suffix):
        raise UsageError(f"{path}: expected a {suffix} file")
    return path


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
        reason = str(error).strip().splitlines()[0][:300]
        raise UsageError(f"cannot read {path}: {reason}") from error


def read_arrays(path):
    if not path.endswith(".npz"):
        raise UsageError(f"{path}: expected an .npz file or a folder of images")
    existing(path, ".npz")
    try:
        with np.load(path) as stored:
            return {name: stored[name] for name in stored.files}
    except Exception as error:  # noqa: BLE001  a corrupt file, any cause
        raise UsageError(f"cannot read {path}: {error}") from error


def read_labelled(path):
    arrays = read_arrays(path)
    missing = [name for name in ("x", "y") if name not in arrays]
    if missing:
        raise UsageError(
            f"{path} has arrays {sorted(arrays)}; expected 'x' (inputs) and "
            f"'y' (labels). Save it with np.savez(path, x=x, y=y)"
        )
    return arrays["x"], arrays["y"]


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
    expected = tuple(model.inputs[0].shape[1:])
    if tuple(x.shape[1:]) != expected:
        raise UsageError(
            f"calibration data has samples of shape {tuple(x.shape[1:])}; "
            f"the model takes {expected}"
        )
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
