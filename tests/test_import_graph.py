"""The imports among tf_distill modules form no cycle, and the low layers import nothing above them.

Read from the source with ``ast`` (no import runs), so a cycle hidden behind a function-level
import counts too. Importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` first, so
an import of a module is one of its parent packages as well (except a module's own parents,
which are already being imported when it runs).
"""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "tf_distill"

# What the low layers may not import (the subpackages built on them); the binaries sit on top.
ABOVE = {"ops": {"layers", "models"}, "layers": {"models"}, "models": set()}
TOP = {"train", "losses", "export", "metrics", "projection", "reproduce", "bin", "cli"}


def _modules():
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _parents(name):
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _imports(name, path, modules):
    """The tf_distill modules ``name`` imports (anywhere in the file), with their parent packages."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules}
    found |= {parent for module in set(found) for parent in _parents(module)}
    return {m for m in found if m in modules and m != name and m not in _parents(name)}


def _graph():
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _find_cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycle():
    graph = _graph()
    assert len(graph) > 50 and "tf_distill.ops.upfirdn2d" in graph
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_upward_import():
    graph = _graph()
    bad = []
    for name, imported in graph.items():
        parts = name.split(".")
        if len(parts) < 2 or parts[1] not in ABOVE:
            continue
        forbidden = ABOVE[parts[1]] | TOP
        bad += [f"{name} imports {m}" for m in sorted(imported) if m.split(".")[1:2] and m.split(".")[1] in forbidden]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_cycles_and_upward_imports(tmp_path):
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from tf_distill.models import generator\n")
    found = _imports("tf_distill.ops.m", source, {"tf_distill", "tf_distill.models", "tf_distill.models.generator"})
    assert found == {"tf_distill.models", "tf_distill.models.generator"}  # tf_distill: its own parent
