"""Registering keras-quant's Keras objects without importing Keras early.

A saved `.keras` file names keras-quant's layers (`keras_quant>Observer`,
...), which Keras finds only once their modules are imported. keras-quant
imports them, and the save hook, as soon as Keras is imported: at once if
it already is, otherwise right after `import keras` finishes (a
one-shot import hook). `import keras_quant` alone stays free of Keras and
TensorFlow, so the command line starts fast.
"""

import importlib
import importlib.abc
import importlib.util
import sys

# Modules whose import registers Keras objects or the save hook.
MODULES = (
    "keras_quant.observation.observers",
    "keras_quant.observation.layers",
    "keras_quant.observation.observed_model",
    "keras_quant.observation.qat",
    "keras_quant.exporting.save_hook",
)

_done = []


def register():
    """Imports the `MODULES` (once)."""
    if _done:
        return
    _done.append(True)
    for name in MODULES:
        importlib.import_module(name)


class _AfterKeras(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps Keras's loader to `register` after it."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            if not _inside_keras_quant_import():
                register()

        spec.loader.exec_module = exec_then_register
        return spec


def _inside_keras_quant_import():
    """Whether a keras-quant module is being imported: Keras was imported by
    keras-quant itself, whose own imports then register what they need
    (registering from here would re-enter a half-imported module)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals.get(
            "__name__", ""
        ).startswith("keras_quant."):
            return True
        frame = frame.f_back
    return False


def register_when_keras_loads():
    """`register` now if Keras is imported, else right after it is."""
    if "keras" in sys.modules:
        register()
    elif not any(isinstance(f, _AfterKeras) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterKeras())
