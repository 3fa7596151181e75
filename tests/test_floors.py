"""The floor plan of docs/ARCHITECTURE.md, checked on the package's imports: none reaches up a floor, none loops
between modules or rooms (a sub-package is one room), and every archsweep import sits at the top of its file
(cli.py alone defers its commands' imports)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "archsweep"

FLOORS = {  # room -> floor, bottom to top, as docs/ARCHITECTURE.md draws them
    "errors": 0, "settings": 0, "checkpoint": 0, "runtime": 0, "trace": 0,
    "spaces": 1, "benchmarks": 1, "metrics": 1, "lm": 1,
    "config": 2,
    "layout": 3, "models": 3, "data": 3, "decoding": 3, "artifacts": 3, "specfile": 3, "tracking": 3, "capacity": 3,
    "train": 4,
    "search": 5,
    "stages": 6,
    "sweep": 7,
    "cli": 8,
}


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(path: Path, name: str, known: set[str]) -> list[tuple[str, int, bool]]:
    """(imported archsweep module, line, inside a function?) for each import of the package in the file."""
    out = []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            targets = []
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in child.names] + [base]
            for target in targets:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target.startswith("archsweep.") and target != name:
                    out.append((target, child.lineno, in_function))
            visit(child, inside)

    visit(ast.parse(path.read_text()), False)
    return out


def room(module: str) -> str:
    return module.split(".")[1]


def graph() -> dict[str, list[tuple[str, int, bool]]]:
    found = modules()
    return {m: imports(p, m, set(found)) for m, p in found.items() if m != "archsweep"}


def has_cycle(edges: dict[str, set[str]]) -> list[str]:
    """A loop in the graph, as its nodes, or []."""
    state, stack = {}, []

    def visit(v):
        state[v] = 1
        stack.append(v)
        for w in edges.get(v, ()):
            if state.get(w) == 1:
                return stack[stack.index(w):]
            if not state.get(w) and (loop := visit(w)):
                return loop
        state[v] = 2
        stack.pop()
        return []

    for v in list(edges):
        if not state.get(v) and (loop := visit(v)):
            return loop
    return []


def test_every_room_has_a_floor():
    assert {room(m) for m in modules() if m != "archsweep"} == set(FLOORS)


def test_no_import_reaches_up_a_floor():
    upward = [f"{m} (floor {FLOORS[room(m)]}) imports {t} (floor {FLOORS[room(t)]})"
              for m, found in graph().items() for t, _, _ in found if FLOORS[room(t)] > FLOORS[room(m)]]
    assert upward == []


def test_no_loop_between_modules_or_rooms():
    g = graph()
    assert has_cycle({m: {t for t, _, _ in found} for m, found in g.items()}) == []
    rooms: dict[str, set[str]] = {}
    for m, found in g.items():
        rooms.setdefault(room(m), set()).update(room(t) for t, _, _ in found if room(t) != room(m))
    assert has_cycle(rooms) == []


def test_archsweep_imports_sit_at_the_top_of_each_file_but_the_cli():
    hidden = [f"{m}:{line} imports {t}" for m, found in graph().items() if m != "archsweep.cli"
              for t, line, inside in found if inside]
    assert hidden == []


def test_the_checks_see_a_loop_and_an_upward_import():
    assert has_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b"]
    assert has_cycle({"a": {"b"}, "b": set()}) == []
    assert FLOORS[room("archsweep.stages.pipeline")] > FLOORS[room("archsweep.search.loop")]
