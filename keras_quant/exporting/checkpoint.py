"""A checkpoint's commit record: the `.quant.json` beside a `.keras`.

`ObservedModel.save` writes a checkpoint's files inside `files.staged()`,
so they are renamed over the previous checkpoint's only once all are
complete, in the order written. The `.quant.json` is written last, listing
the SHA-256 of every other file: it is the commit record, and
`is_complete` tells whether the files on disk are the ones it lists (a
process killed between two renames leaves a checkpoint that is not).

Imports neither Keras nor TensorFlow.

>>> keras_path = f"{tmp_dir}/m.keras"
>>> with files.staged():
...     files.write_atomically(keras_path, b"weights")
...     write_record(keras_path, [keras_path], {"exports": []})
>>> is_complete(keras_path)
True
>>> open(keras_path, "wb").write(b"other")
5
>>> is_complete(keras_path)
False
"""

import json
import os

from keras_quant.exporting import files

KERAS_SUFFIX = ".keras"
RECORD_SUFFIX = ".quant.json"


def record_path(keras_path):
    """`<stem>.quant.json` for `<stem>.keras`."""
    return os.fspath(keras_path)[: -len(KERAS_SUFFIX)] + RECORD_SUFFIX


def write_record(keras_path, paths, summary):
    """Writes `summary` (a dict) as the checkpoint's `.quant.json`, with
    `"sha256"`: the digest of each file in `paths` by file name."""
    summary = dict(summary)
    summary["sha256"] = {
        os.path.basename(os.fspath(path)): files.sha256(
            files.current_path(path)
        )
        for path in paths
    }
    text = json.dumps(summary, indent=2, default=files.json_default)
    files.write_atomically(record_path(keras_path), text.encode())


def is_complete(keras_path):
    """Whether the checkpoint's files on disk are the ones its
    `.quant.json` lists, byte for byte."""
    try:
        with open(record_path(keras_path)) as stream:
            listed = json.load(stream)["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    folder = os.path.dirname(os.fspath(keras_path))
    return all(
        os.path.isfile(os.path.join(folder, name))
        and files.sha256(os.path.join(folder, name)) == digest
        for name, digest in listed.items()
    )
