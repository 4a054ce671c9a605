"""The house rules of docs/architecture.md, checked on the source: imports go one way down the layers, no import
circles between modules, and no private name crosses a module boundary. Every import counts, including those
inside functions."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mobilenetv3"

# Lowest first; a module may import its own layer and those below, never one above. Keep in step with
# docs/architecture.md.
LAYERS = (
    ("extras", "spec"),
    ("zoo", "layers", "cost"),
    ("model", "inputs", "convert"),
    ("data", "runtime", "segmentation", "detection"),
    ("tasks",),
    ("deploy",),
    ("latency",),
    ("train",),
    ("bench", "search"),
    ("cli", "__main__"),
)
LAYER_OF = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = modules()


def room(module: str) -> str | None:
    """The top-level room (``runtime``, ``deploy``, ...) a module belongs to; None for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def imports(module: str, path: Path, source: str | None = None) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) for every import in the file, relative ones resolved."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text() if source is None else source, str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            names = [alias.name for alias in node.names]
            # "from . import latency" imports a module; "from .x import name" imports a name from x
            submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in MODULES]
            found += [(s, [], node.lineno) for s in submodules]
            found.append((base, [n for n in names if f"{base}.{n}" not in MODULES], node.lineno))
    return [(target, names, line) for target, names, line in found if target.split(".")[0] == "mobilenetv3"]


def test_the_layer_table_names_every_room():
    rooms = {room(m) for m in MODULES} - {None}
    assert rooms <= set(LAYER_OF), f"rooms missing from LAYERS (and docs/architecture.md): {rooms - set(LAYER_OF)}"


def upward_imports(module: str, path: Path, source: str | None = None) -> list[str]:
    here = room(module)
    allowed = 2 if here is None else LAYER_OF[here]  # the package's __init__ re-exports the core only
    upward = []
    for target, _, line in imports(module, path, source):
        there = room(target)
        if there is not None and LAYER_OF.get(there, -1) > allowed:
            upward.append(f"line {line}: {target} (layer {LAYER_OF[there]} > {allowed})")
    return upward


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_layers(module):
    upward = upward_imports(module, MODULES[module])
    assert not upward, f"{module} imports upward: " + "; ".join(upward)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_crosses_a_module_boundary(module):
    crossing = [f"line {line}: {name} from {target}" for target, names, line in imports(module, MODULES[module])
                for name in names if name.startswith("_") and not name.startswith("__") and target != module]
    assert not crossing, f"{module} imports private names: " + "; ".join(crossing)


def test_no_import_circles():
    graph = {m: set() for m in MODULES}
    for m, path in MODULES.items():
        for target, _, _ in imports(m, path):
            # a package's own __init__ is imported on the way to any of its modules: not an edge of the circle
            if target in MODULES and target != m and not m.startswith(target + "."):
                graph[m].add(target)
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_the_checker_sees_upward_imports_and_private_names():
    """The rules above would pass vacuously if import resolution were broken: check it on a made-up module."""
    source = ("from ..extras import require\n"
              "def f():\n"
              "    from ..deploy.fold import fold_bn\n"  # lazy, inside a function: still an upward import
              "    from .. import latency\n"
              "    from ..inputs import _hidden\n")
    path = PACKAGE / "runtime" / "made_up.py"
    upward = upward_imports("mobilenetv3.runtime.made_up", path, source)
    assert len(upward) == 2 and "line 3: mobilenetv3.deploy.fold" in upward[0] and "mobilenetv3.latency" in upward[1]
    found = imports("mobilenetv3.runtime.made_up", path, source)
    assert ("mobilenetv3.inputs", ["_hidden"], 5) in found and ("mobilenetv3.extras", ["require"], 1) in found
