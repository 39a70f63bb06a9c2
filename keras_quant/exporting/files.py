"""Writing keras-quant's files so that a failure loses nothing.

Every file keras-quant writes goes through `write_atomically`: a
temporary file in the destination's folder, flushed to disk, renamed over
the destination only when complete, keeping the destination's permissions.
A failed export therefore never leaves a partial file and never replaces a
good one; a killed process leaves at most a hidden `.kq-*.tmp.<suffix>` file.

Inside `staged()`, the renames wait for the end of the block: the files of
one checkpoint (the `.keras`, its `.tflite` files, its `.quant.json`)
appear together when every step succeeded, or none of them does. They are
renamed in the order they were written, so the file written last (the
`.quant.json`, which lists the others' SHA-256) is the commit record.

>>> with staged():
...     write_atomically(f"{tmp_dir}/a.bin", b"a")
...     os.path.exists(f"{tmp_dir}/a.bin")
False
>>> open(f"{tmp_dir}/a.bin", "rb").read()
b'a'
"""

import contextlib
import contextvars
import hashlib
import os
import re
import stat
import tempfile

import numpy as np

from keras_quant.errors import UnwritablePathError

TFLITE_SUFFIX = ".tflite"
TEMPORARY_PREFIX = ".kq-"

# The longest file or folder name, in bytes, where the system cannot say.
NAME_MAX = 255

# One component of a path: what lies between separators.
_COMPONENT = re.compile(f"[^{re.escape(os.sep + (os.altsep or ''))}]+")

# The renames waiting for the end of the innermost `staged()` block:
# a list of (temporary path, destination).
_STAGE = contextvars.ContextVar("keras_quant_stage", default=None)


def check_filepath(filepath, suffix=TFLITE_SUFFIX, argument="filepath"):
    """`filepath` as a string, once it is known to be writable: before any
    conversion, so a bad destination costs nothing.

    Raises:
        ValueError: the name does not end in `suffix`, or holds a NUL byte.
        UnwritablePathError: the path is a folder; its folder cannot be
            created or written to; it goes through `..` after a folder
            that does not exist; or a name in it is longer than the file
            system allows.
    """
    path = os.fspath(filepath)
    if not path.endswith(suffix):
        raise ValueError(
            f"Expected `{argument}` to end in '{suffix}'. "
            f"Received: {argument}={path!r}"
        )
    check_path_text(path, argument)
    if os.path.isdir(path):
        raise UnwritablePathError(
            f"{path!r} is a folder. Name a file inside it, e.g. "
            f"{os.path.join(path, 'model' + suffix)!r}."
        )
    check_folder(folder_of(path), argument)
    return path


def check_folder(folder, argument):
    """Creates `folder` if needed and checks a file can be written in it.

    Raises:
        ValueError: the path holds a NUL byte.
        UnwritablePathError: naming `argument` and the reason.
    """
    check_path_text(folder, argument)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UnwritablePathError(
            f"`{argument}` needs a folder, but {folder!r} is a file. Choose "
            f"a `{argument}` in a folder you can write to."
        )
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=TEMPORARY_PREFIX):
            pass
    except OSError as error:
        raise UnwritablePathError(
            f"Cannot write to folder {folder!r} ({error.strerror or error}). "
            f"Choose a `{argument}` in a folder you can write to."
        ) from error
    return folder


def check_path_text(path, argument):
    """Checks what can be known of `path` without creating anything: no
    NUL byte, no name longer than the file system takes, and each `..`
    after a folder that exists (the system resolves `..` from the folder
    before it, which `os.path.normpath` would drop unseen).

    `argument` names the path in messages: an argument name such as
    `filepath` (shown in backticks), or an option such as `--output`.

    Raises:
        ValueError: a NUL byte.
        UnwritablePathError: a name too long, or a `..` that cannot be
            followed.
    """
    path = os.fspath(path)
    label = argument if argument.startswith("-") else f"`{argument}`"
    if "\0" in path:
        raise ValueError(
            f"{label} {path!r} holds a NUL byte ('\\0'), which no file name "
            "may contain. Remove it."
        )
    _check_parents(path, label)
    _check_name_lengths(path, label)
    return path


def folder_of(filepath):
    """The folder `filepath` is written in, as the system resolves it when
    the file is written: symbolic links first, then each `..` from where
    they lead (`os.path.abspath` would drop `link/..` unseen, and put the
    temporary file in another folder than its destination)."""
    return os.path.realpath(os.path.dirname(os.fspath(filepath)) or os.curdir)


def _check_parents(path, label):
    """Each `..` in `path` must follow a folder that exists."""
    for component in _COMPONENT.finditer(path):
        above = path[: component.start()]
        if component.group() != os.pardir or not above:
            continue
        if os.path.isdir(above):
            continue
        blocking = _first_missing_folder(path, component.start())
        problem = (
            "is not a folder" if os.path.exists(blocking) else "does not exist"
        )
        raise UnwritablePathError(
            f"{label} {path!r} goes through {blocking!r}, which {problem}, "
            "so the system cannot follow the '..' after it. Create that "
            "folder, or name the destination without it, e.g. "
            f"{os.path.normpath(path)!r}."
        )


def _first_missing_folder(path, end):
    """The first folder of `path[:end]` that is not an existing folder."""
    for component in _COMPONENT.finditer(path[:end]):
        folder = path[: component.end()]
        if not os.path.isdir(folder):
            return folder
    return path[:end]


def _check_name_lengths(path, label):
    """No file or folder name in `path` longer than the file system's
    limit (`PC_NAME_MAX` of the nearest folder that exists)."""
    limit = _name_max(path)
    for component in _COMPONENT.finditer(path):
        name = component.group()
        size = len(os.fsencode(name))
        if 0 < limit < size:  # (-1: the system sets no limit)
            shown = name if len(name) <= 40 else f"{name[:20]}...{name[-12:]}"
            raise UnwritablePathError(
                f"{label} holds a name of {size} bytes ({shown!r}), longer "
                f"than the {limit} bytes a file or folder name may have "
                "there. Shorten it (a format spec such as ':>300' pads a "
                "field to 300 characters)."
            )


def _name_max(path):
    """`PC_NAME_MAX` of the nearest existing folder of `path`; `NAME_MAX`
    where the system cannot say (Windows)."""
    folder = os.path.abspath(os.path.dirname(path) or os.curdir)
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):
        return NAME_MAX


def write_atomically(filepath, data):
    """Writes `data` to `filepath` through a temporary file and a rename.

    The file keeps the permissions of the file it replaces, or gets those
    a plain `open(filepath, "wb")` would give (0666 less the umask), not
    the private ones of a temporary file. Inside `staged()` the rename
    waits for the end of the block.
    """
    with replacing(filepath) as temporary:
        with open(temporary, "wb") as stream:
            stream.write(data)


@contextlib.contextmanager
def replacing(filepath):
    """Yields a temporary path beside `filepath` for the block to write;
    `commit`s it when the block ends normally, removes it otherwise.

    For writers that want a path, not bytes (Keras's `save`)."""
    temporary = temporary_path(filepath)
    try:
        yield temporary
    except BaseException:
        remove(temporary)
        raise
    commit(temporary, filepath)  # removes the temporary file if it fails


def temporary_path(filepath):
    """A new, empty temporary file beside `filepath`, with its suffix (Keras
    requires `.keras`); its path. Pass it to `commit` once written
    (`replacing` does both)."""
    suffix = ".tmp" + os.path.splitext(os.fspath(filepath))[1]
    handle, temporary = tempfile.mkstemp(
        dir=folder_of(filepath), prefix=TEMPORARY_PREFIX, suffix=suffix
    )
    os.close(handle)
    return temporary


def commit(temporary, filepath):
    """Makes a written temporary file `filepath`: flushed to disk, with the
    destination's permissions, renamed now or, inside `staged()`, at the
    end of the block. Removes the temporary file if any of it fails (a
    rename to a path the system cannot resolve included)."""
    try:
        _sync(temporary)
        os.chmod(temporary, _permissions(filepath))
        stage = _STAGE.get()
        if stage is None:
            _rename(temporary, filepath)
        else:
            stage.append((temporary, os.fspath(filepath)))
    except BaseException:
        remove(temporary)
        raise


@contextlib.contextmanager
def staged():
    """Holds back the renames of the files written inside the block: all
    of them happen, in order, when it ends normally; on an exception the
    temporary files are removed and every destination is left as it was.
    """
    stage = []
    token = _STAGE.set(stage)
    try:
        yield
    except BaseException:
        for temporary, _ in stage:
            remove(temporary)
        raise
    finally:
        _STAGE.reset(token)
    for index, (temporary, filepath) in enumerate(stage):  # back to back
        try:
            os.replace(temporary, filepath)
        except BaseException:
            for left, _ in stage[index:]:
                remove(left)
            raise
    for folder in {folder_of(f) for _, f in stage}:
        _sync_folder(folder)


def current_path(filepath):
    """Where `filepath`'s bytes are now: its temporary file while a
    `staged()` block holds it back, else `filepath`."""
    for temporary, destination in reversed(_STAGE.get() or []):
        if destination == os.fspath(filepath):
            return temporary
    return os.fspath(filepath)


def sha256(path):
    """The SHA-256 of a file's bytes, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _rename(temporary, filepath):
    os.replace(temporary, filepath)
    _sync_folder(folder_of(filepath))


def _sync(path):
    with open(path, "rb+") as stream:
        os.fsync(stream.fileno())


def _sync_folder(folder):
    """Makes a rename durable (folders cannot be opened on Windows)."""
    with contextlib.suppress(OSError):
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def _permissions(filepath):
    with contextlib.suppress(FileNotFoundError):
        return stat.S_IMODE(os.stat(filepath).st_mode)
    return 0o666 & ~_umask()


def remove(path):
    """Removes a file if it exists."""
    with contextlib.suppress(OSError):
        os.unlink(path)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def json_default(value):
    """`json.dumps` help for NumPy scalars."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Cannot serialize {type(value).__name__}")
