"""The sgnn module import graph is acyclic, counting imports inside functions too (a function-level
import must never hide a cycle)."""
from __future__ import annotations

import ast
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1] / "sgnn"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The sgnn modules ``path`` imports anywhere in its body (``from .x import y`` may name a module y)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = package.split(".")
                pkg = pkg[:len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            for a in node.names:
                if f"{base}.{a.name}" in modules:
                    out.add(f"{base}.{a.name}")
                elif base in modules:
                    out.add(base)
    out.discard(me)
    return out


def graph() -> dict[str, set[str]]:
    files = [p for p in ROOT.rglob("*.py")]
    modules = {module_name(p) for p in files}
    g = {module_name(p): imports(p, modules) for p in files}
    # importing a.b.c runs a/__init__ and a/b/__init__ first: packages are not edges of their own
    return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in g.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str):
        state[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_graph_sees_function_level_imports():
    g = graph()
    assert "sgnn.engine.runtime" in g["sgnn.engine.api"]
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]


def test_engine_import_graph_is_acyclic():
    g = graph()
    engine = {m: {d for d in deps if d.startswith("sgnn.engine")} for m, deps in g.items() if m.startswith("sgnn.engine")}
    assert find_cycle(engine) is None, f"import cycle: {' -> '.join(find_cycle(engine))}"


def test_import_graph_is_acyclic():
    g = graph()
    cycle = find_cycle(g)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"
