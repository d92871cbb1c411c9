"""The one-way dependencies, read from the source: `bfnas` -> `search` -> `bench` -> `models`
(a package imports only those after it), and no cycle between modules. Every import counts,
the ones inside functions too: a lazy import is still a dependency."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Folder in the checkout -> package name and rank (a package may import lower ranks only).
LAYERS = {
    "models": ("bfnas.models", 0),
    "bench": ("bfnas.bench", 1),
    "search": ("bfnas.search", 2),
    "bfnas": ("bfnas", 3),
}


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO)
    package = LAYERS[rel.parts[0]][0]
    parts = [package, *rel.parts[1:-1]] + ([] if rel.stem == "__init__" else [rel.stem])
    return ".".join(parts)


# The foundation every layer may import: the project's error types and its version. They live
# at the package's root and import nothing of bfnas, so importing them pulls no layer in.
FOUNDATION = {"bfnas.errors": -1, "bfnas.version": -1}


def rank(module: str) -> int | None:
    """The layer of a bfnas module name (None for bfnas.hw_profiles, a data package)."""
    if module in FOUNDATION:
        return FOUNDATION[module]
    for package, r in sorted(LAYERS.values(), key=lambda v: -len(v[0])):
        if module == package or module.startswith(package + "."):
            return None if module.startswith("bfnas.hw_profiles") else r
    return None


def imports(path: Path, name: str) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                parts = name.split(".")
                # A package's __init__ is its own package: one level fewer to go up.
                up = node.level - (path.stem == "__init__")
                base = parts[: len(parts) - up]
                module = ".".join(base + ([node.module] if node.module else []))
                found.add(module)
                found |= {f"{module}.{a.name}" for a in node.names}
            elif node.module:
                found.add(node.module)
                # `from bfnas.bench import jobs` imports the module bfnas.bench.jobs
                found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m == "bfnas" or m.startswith("bfnas.")}


def graph() -> dict[str, set[str]]:
    files = [p for folder in LAYERS for p in (REPO / folder).rglob("*.py")]
    names = {module_name(p): p for p in files}
    return {
        name: {m for m in imports(path, name) if m in names and m != name}
        for name, path in names.items()
    }


def test_imports_go_one_way_only():
    upward = [
        f"{src} imports {dst}"
        for src, deps in graph().items()
        for dst in deps
        if rank(dst) is not None and rank(src) is not None and rank(dst) > rank(src)
    ]
    assert not upward, upward


def _cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_cycle_between_modules():
    # Package __init__ files re-export their modules: an edge into a package's __init__ from
    # its own module is how Python loads it, not a design cycle.
    g = {src: {d for d in deps if not src.startswith(d + ".")} for src, deps in graph().items()}
    assert not _cycles(g), _cycles(g)


def test_the_checks_catch_what_they_guard():
    assert rank("bfnas.search.loop") == 2 and rank("bfnas.models") == 0
    assert rank("bfnas.hw_profiles") is None
    assert rank("bfnas.errors") < rank("bfnas.models") < rank("bfnas.commands.measure")
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    g = graph()
    assert "bfnas.models.space.subnet" in g["bfnas.bench.store.latency_store"]  # a top-level import
    assert "bfnas.bench.store.latency_store" in g["bfnas.commands.measure"]  # one inside a function


DEVICE = "bfnas.bench.device"
# What a device holds besides Python: its runtime (and, for TensorRT, the onnx it reads).
DEVICE_PACKAGES = {"numpy", "onnxruntime", "tensorrt", "pycuda", "onnx"}


def third_party(path: Path) -> set[str]:
    """The top-level packages outside the standard library that a file imports."""
    import sys

    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"__future__"}


def test_the_device_package_imports_only_itself_and_the_runtime():
    # It is shipped to devices as a zip without bfnas (bench.runners.device_code).
    g = graph()
    outside = {
        name: sorted(d for d in deps if not d.startswith(DEVICE))
        for name, deps in g.items()
        if name.startswith(DEVICE)
    }
    assert {k: v for k, v in outside.items() if v} == {}
    files = (REPO / "bench" / "device").rglob("*.py")
    extra = {str(f.relative_to(REPO)): third_party(f) - DEVICE_PACKAGES for f in files}
    assert {k: v for k, v in extra.items() if v} == {}


def test_the_device_checks_see_what_they_guard(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import pydantic\nfrom rich import print\nimport numpy\nimport json\n")
    assert third_party(bad) == {"pydantic", "rich", "numpy"}
    init = REPO / "bench" / "device" / "backends" / "__init__.py"
    assert f"{DEVICE}.lazy_import" in imports(init, f"{DEVICE}.backends")  # `from ..lazy_import`


def test_the_foundation_imports_nothing_of_bfnas():
    g = graph()
    assert {name: g[name] for name in FOUNDATION if g[name]} == {}
