"""Work shared by the conversions of one export run.

An export run (`exporting.api.run`: `export`, `export_many`,
`TFLiteExport`, the save hook, the command line) converts one model in
several modes, and `mode="auto"` converts the same candidates more than
once (to measure, to compare, to write). Inside `one_run()`, each piece of
work is done once and kept until the run ends (decision D48): a model's
collected ranges read once, its float graph traced and frozen once per
shape setting, the engine's float model converted once per target, and
each `ConvertOptions` converted once.
Outside a run nothing is kept.

The keys name the model by `id`: within a run the model object lives, and
its weights and ranges do not change.

>>> with one_run():
...     first = computed(("answer",), lambda: object())
...     first is computed(("answer",), lambda: object())
True
>>> computed(("answer",), lambda: 42)  # outside a run: computed each time
42
"""

import contextlib
import contextvars

_CURRENT = contextvars.ContextVar("keras_quant_shared_work", default=None)


@contextlib.contextmanager
def one_run():
    """A block whose conversions share their work; a block inside another
    shares the outer one's."""
    if _CURRENT.get() is not None:
        yield
        return
    token = _CURRENT.set({})
    try:
        yield
    finally:
        _CURRENT.reset(token)


def computed(key, compute):
    """`compute()`, done once per `key` within a run (each time outside
    one). A failure is not kept: it is raised, and tried again next time."""
    kept = _CURRENT.get()
    if kept is None:
        return compute()
    if key not in kept:
        kept[key] = compute()
    return kept[key]
