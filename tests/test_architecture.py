"""The layout of docs/architecture.md, kept: no import loops, every import between the package's
modules at the top of its file, prediction never importing training, each module in its layer."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "textrnn"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py"))

# The layers, lowest first: a module imports only from its own layer or lower ones (docs/architecture.md).
LAYERS = [
    {"_env", "errors", "progress", "batching", "evaluation"},
    {"config", "text"},
    {"io", "runtime", "embeddings", "adaptive", "mkl"},
    {"datasets", "models", "distributed", "plots", "tracking"},
    {"fastrnn", "optim"},
    {"inference"},
    {"pieces", "checkpoint", "trainer", "pretrain"},
    {"classifier", "explain", "export"},
    {"pipeline", "tune", "report", "streaming", "serving", "cli", "__init__", "__main__"},
]
TRAINING = {"trainer", "pieces", "checkpoint", "optim", "pretrain"}
PREDICTION = {"inference", "fastrnn", "explain", "export", "serving", "streaming"}


def _imports(module: str) -> tuple[set[str], list[tuple[int, str]]]:
    """The package modules ``module`` imports at its top, and (line, name) of any imported elsewhere."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    top = {id(n) for n in tree.body}
    at_top, inside = set(), []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.level < 1:
            continue
        names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
        names = [n for n in names if n in MODULES]
        if id(node) in top:
            at_top.update(names)
        else:
            inside += [(node.lineno, n) for n in names]
    return at_top, inside


GRAPH = {m: _imports(m)[0] for m in MODULES}


def test_every_module_has_a_layer():
    placed = set().union(*LAYERS)
    assert set(MODULES) == placed, f"unplaced: {set(MODULES) - placed}; gone: {placed - set(MODULES)}"


def test_there_are_no_import_loops():
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(GRAPH[m]):
            if state.get(d) == 1:
                pytest.fail("import loop: " + " -> ".join(path[path.index(d) :] + [d]))
            if d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in MODULES:
        if m not in state:
            visit(m, [m])


@pytest.mark.parametrize("module", MODULES)
def test_imports_between_modules_are_at_the_top_and_run_down_the_layers(module):
    at_top, inside = _imports(module)
    assert not inside, f"{module}.py imports package modules inside functions: {inside}"
    level = next(i for i, layer in enumerate(LAYERS) if module in layer)
    upward = [d for d in at_top if next(i for i, layer in enumerate(LAYERS) if d in layer) > level]
    assert not upward, f"{module}.py (layer {level}) imports from higher layers: {upward}"


@pytest.mark.parametrize("module", sorted(PREDICTION))
def test_prediction_never_imports_training(module):
    assert not GRAPH[module] & TRAINING, f"{module}.py imports {GRAPH[module] & TRAINING}"


def test_functions_stay_short():
    """About 80 lines at most, so each reads on one screen; the argument parser is a table."""
    long = []
    for module in MODULES:
        tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (module, node.name) != ("cli", "build_parser"):
                lines = node.end_lineno - node.lineno + 1
                if lines > 85:
                    long.append(f"{module}.{node.name}: {lines} lines")
    assert not long, long
