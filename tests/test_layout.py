"""The layout rule of docs/architecture.md: rooms on floors, and a module imports only its own room or lower floors.

Every import counts, the lazy ones inside functions included: a lazy import of a room above is still an arrow
pointing up. The package facades (``__init__.py`` of aunet, aunet.runtime, aunet.tap) re-export names lazily
and are exempt.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Source folder -> package name (export/, runtime/ and calibration/ install inside the aunet namespace).
SOURCES = {"aunet": "aunet", "export": "aunet.export", "runtime": "aunet.runtime", "calibration": "aunet.calibration"}
# Room -> floor, lowest first. The root modules (aunet.spec, aunet.config, aunet.io, ...) are the contracts.
FLOORS = {
    "aunet": 0,
    "aunet.backends": 1,
    "aunet.faces": 2,
    "aunet.model": 3,
    "aunet.tap": 4,
    "aunet.prep": 5,
    "aunet.evaluate": 6, "aunet.calibration": 6, "aunet.runtime": 6,
    "aunet.train": 7, "aunet.export": 7,
    "aunet.serve": 7,  # aunet-serve: the runtime's Detector behind Triton
    "aunet.demo": 8,  # the demo and the sample data it makes
    "aunet.bench": 9,  # benchmarks run on the demo's sample data
}
FACADES = {"aunet", "aunet.runtime", "aunet.tap"}


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in SOURCES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def room_of(module: str) -> str:
    """The longest room name that is ``module`` or a package above it; root modules belong to "aunet"."""
    rooms = [r for r in FLOORS if module == r or module.startswith(r + ".")]
    return max(rooms, key=len)


def import_target(node: ast.ImportFrom, package: str) -> str:
    """The absolute module name of a ``from ... import`` (relative levels resolved against ``package``)."""
    if not node.level:
        return node.module or ""
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(module: str, path: Path) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(import_target(node, package))
    return {n for n in names if n == "aunet" or n.startswith("aunet.")}


def test_every_module_has_a_room_and_the_floors_cover_the_tree():
    found = modules()
    assert len(found) > 40  # the walk found the tree
    for room in FLOORS:
        assert room in found, f"{room} is on the floor plan but not in the tree"


@pytest.mark.parametrize("module", sorted(modules()))
def test_no_module_imports_a_room_above_its_own(module):
    if module in FACADES:
        pytest.skip("package facade: lazy re-exports")
    path = modules()[module]
    mine = room_of(module)
    upward = []
    for target in sorted(imported_modules(module, path)):
        theirs = room_of(target)
        if theirs != mine and FLOORS[theirs] >= FLOORS[mine]:
            upward.append(f"{target} ({theirs}, floor {FLOORS[theirs]})")
    assert not upward, f"{module} ({mine}, floor {FLOORS[mine]}) imports " + ", ".join(upward)


def test_the_rule_catches_an_upward_import(tmp_path):
    """The check itself can fail: a faces module importing the model room is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from aunet.model import build_model\n")
    targets = imported_modules("aunet.faces.bad", bad)
    assert targets == {"aunet.model"}
    assert FLOORS[room_of("aunet.model")] > FLOORS[room_of("aunet.faces.bad")]


def top_level_imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Modules imported when ``module`` is imported (module-level statements only, ``TYPE_CHECKING`` aside)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            continue
        for sub in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else []:
            if isinstance(sub, ast.Import):
                found.update(a.name for a in sub.names)
            elif isinstance(sub, ast.ImportFrom):
                target = import_target(sub, package)
                found.add(target)
                found.update(f"{target}.{a.name}" for a in sub.names)
    # importing a.b.c imports a and a.b first; the packages above this module are being imported already
    ancestors = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
    closed = set()
    for name in found:
        parts = name.split(".")
        closed.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {n for n in closed - ancestors if n in known and n != module}


def test_no_import_cycles():
    found = modules()
    graph = {m: top_level_imports(m, p, set(found)) for m, p in found.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
