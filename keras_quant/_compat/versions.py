"""The versions the private APIs of `keras_quant._compat` were checked on."""

import importlib.metadata
import warnings

# Oldest and newest (major, minor) on which the private names were read.
TESTED = {
    "keras": ((3, 12), (3, 15)),
    "tensorflow": ((2, 20), (2, 21)),
}

_warned = set()


def _major_minor(version):
    parts = version.split(".")
    return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()))


def installed(distribution):
    """The installed (major, minor) of `distribution`, or None."""
    for name in (distribution, f"{distribution}-cpu"):
        try:
            return _major_minor(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def check(distribution):
    """Warns once if `distribution` is outside the tested versions.

    >>> check("keras") in (True, False)
    True

    Returns:
        Whether the installed version is one keras-quant was tested on.
    """
    low, high = TESTED[distribution]
    found = installed(distribution)
    if found is None or low <= found <= high:
        return True
    if distribution not in _warned:
        _warned.add(distribution)
        warnings.warn(
            f"keras-quant reads private parts of {distribution}, checked on "
            f"{low[0]}.{low[1]} to {high[0]}.{high[1]}; "
            f"{found[0]}.{found[1]} is installed. If an export fails "
            "with an AttributeError, install a tested version (see "
            "constraints.txt).",
            stacklevel=3,
        )
    return False


def broken(what, error):
    """An `ImportError` naming the private API that moved and the fix."""
    return ImportError(
        f"keras-quant could not use {what} ({error}). It was checked on "
        f"keras {TESTED['keras']} and tensorflow {TESTED['tensorflow']}; "
        "install versions from constraints.txt."
    )
