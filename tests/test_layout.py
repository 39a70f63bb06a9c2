"""The package's shape: imports only go down the pipeline, private APIs of
other libraries stay in `keras_quant._compat`, and the front door is light.
"""

import ast
import os
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "keras_quant"

# The pipeline's stages, lowest first. A module may import from its own
# stage and the stages below it, never above.
STAGES = (
    (
        "errors",
        "modes",
        "targets",
        "options",
        "data",
        "text",
        "native_stderr",
        "_compat",
    ),
    ("_registration",),  # imports the layers by name, when Keras loads
    ("graph",),
    ("observation",),
    ("runtime",),
    ("conversion",),
    ("measurement",),
    ("exporting",),
    ("callbacks", "cli"),
    ("__init__", "__main__", "quiet"),
)

# Names of other libraries' internals, allowed only under `_compat`.
PRIVATE_MODULES = (
    "keras.src",
    "tensorflow.python",
    "tensorflow.lite.python",
    "tensorflow.lite.tools",
    "tensorflow.core",
)
# Private attributes that the Python documentation itself describes.
# (`os._exit`: how a forked child ends without running the parent's
# clean-up, as the `os` documentation says).
DOCUMENTED = {"_getframe", "_exit"}


def modules():
    """`{dotted name: path}` of every module of the package."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports_of(path, known):
    """keras-quant modules imported anywhere in `path` (functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [
                f"{node.module}.{alias.name}"
                if f"{node.module}.{alias.name}" in known
                else node.module
                for alias in node.names
            ]
        else:
            continue
        found.update(name for name in names if name in known)
    return found


def import_graph():
    known = modules()
    return {name: imports_of(path, known) for name, path in known.items()}


def stage_of(module):
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
    for rank, stage in enumerate(STAGES):
        if key in stage:
            return rank
    raise AssertionError(f"{module} belongs to no stage: add it to STAGES")


def test_no_import_cycle():
    graph = import_graph()
    state = {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph[module]):
            if target == module:
                continue
            if state.get(target) == "open":
                cycle = path[path.index(target) :] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_imports_only_go_down_the_pipeline():
    upward = [
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        for target in targets
        if stage_of(target) > stage_of(module)
    ]
    assert upward == []


def test_other_libraries_internals_stay_in_compat():
    found = []
    for name, path in modules().items():
        if name.startswith("keras_quant._compat"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                module = getattr(node, "module", None) or ""
                names = [module] + [a.name for a in node.names]
                found += [
                    f"{name}: import {n}"
                    for n in names
                    if n.startswith(PRIVATE_MODULES)
                ]
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and node.attr not in DOCUMENTED
                and not (
                    isinstance(node.value, ast.Name)
                    and node.value.id in ("self", "cls")
                )
            ):
                found.append(f"{name}:{node.lineno}: .{node.attr}")
    assert found == []


def run_python(code):
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout.strip()


def test_import_loads_neither_keras_nor_tensorflow():
    loaded = run_python(
        "import sys, keras_quant, keras_quant.cli.parser\n"
        "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))"
    )
    assert loaded == "[]"


def test_keras_objects_register_when_keras_is_imported_later(tmp_path):
    """`import keras_quant` first, Keras after: a saved observed model
    loads with no `custom_objects`."""
    path = tmp_path / "m.keras"
    code = (
        "import keras_quant\n"
        "import keras\n"
        "inputs = keras.Input((3,))\n"
        "model = keras.Model(inputs, keras.layers.Dense(2)(inputs))\n"
        "observed = keras_quant.observe(model, save_modes=())\n"
        f"observed.save({str(path)!r})\n"
    )
    run_python(code)
    loaded = run_python(
        "import keras_quant, keras\n"
        f"model = keras.saving.load_model({str(path)!r})\n"
        "print(type(model).__name__, len(model.observers))"
    )
    assert loaded == "ObservedModel 2"
