"""The package's import graph, read from the source with ``ast``: no cycles.

Every ``import``/``from … import`` statement counts, including the ones inside functions
(a function-local import only postpones a cycle, it does not remove it). ``from pkg import
name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``.
"""
import ast
from pathlib import Path

import iclconstruct

ROOT = Path(iclconstruct.__file__).parent
PKG = "iclconstruct"


def _modules():
    out = {}
    for f in ROOT.rglob("*.py"):
        rel = f.relative_to(ROOT).with_suffix("")
        parts = [PKG] + list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _resolve(mod: str, is_pkg: bool, level: int, name: str) -> str:
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_graph():
    mods = _modules()
    graph = {m: set() for m in mods}
    for mod, f in mods.items():
        is_pkg = f.name == "__init__.py"
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_pkg, node.level, node.module or "") if node.level else (node.module or "")
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    targets.append(sub if sub in mods else base)
            for t in targets:
                while t and t not in mods and "." in t:  # `import iclconstruct.x.y` -> nearest module
                    t = t.rsplit(".", 1)[0]
                if t in mods and t != mod:
                    graph[mod].add(t)
    return graph


def find_cycle(graph):
    """One cycle as a list of modules (first == last), or ``None``."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = {m: WHITE for m in graph}
    stack = []

    def visit(m):
        colour[m] = GREY
        stack.append(m)
        for n in sorted(graph[m]):
            if colour[n] == GREY:
                return stack[stack.index(n):] + [n]
            if colour[n] == WHITE:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        colour[m] = BLACK
        return None

    for m in sorted(graph):
        if colour[m] == WHITE:
            found = visit(m)
            if found:
                return found
    return None


def test_the_graph_sees_function_local_imports():
    g = import_graph()
    assert "iclconstruct.lang.layout" in g["iclconstruct.lang.program"]
    assert "iclconstruct.demo" in g["iclconstruct.cli"]  # imported inside a function


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_language_does_not_import_the_compiler():
    g = import_graph()
    for mod, deps in g.items():
        if mod.startswith("iclconstruct.lang"):
            bad = [d for d in deps if not d.startswith(("iclconstruct.lang", "iclconstruct.errors",
                                                       "iclconstruct.numerics"))]
            assert not bad, f"{mod} imports {bad}"


def test_row_arithmetic_lives_in_layout_only():
    """No ``.start``/``.stop`` of a slot outside ``lang/layout.py``: everything else speaks in slot names."""
    found = []
    for f in ROOT.rglob("*.py"):
        if f == ROOT / "lang" / "layout.py":
            continue
        tree = ast.parse(f.read_text(encoding="utf-8"))
        called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}  # re.Match.start() is not a slot
        for n in ast.walk(tree):
            if isinstance(n, ast.Attribute) and n.attr in ("start", "stop") and id(n) not in called:
                found.append(f"{f.relative_to(ROOT)}:{n.lineno} .{n.attr}")
    assert not found, "row arithmetic outside lang/layout.py: " + ", ".join(found)


def test_each_lemma_is_one_short_documented_function():
    import inspect

    from iclconstruct.compiler import attention, layernorm, mlp

    lemmas = {attention.attend_offset: "hard attention", attention.attend_position: "hard attention",
              attention.averaging_read: "Definition C.2", mlp.product_units: "Lemma 4",
              mlp.bypass_units: "Lemma 5", layernorm.layernorm_bypass: "Lemma 6", layernorm.balance: "Lemma 6",
              layernorm.division_setup: "Lemma 8", layernorm.restore_anchors: "Lemma 6"}
    for fn, cites in lemmas.items():
        lines, _ = inspect.getsourcelines(fn)
        assert len(lines) <= 40, f"{fn.__name__} has {len(lines)} lines"
        assert cites.lower() in (fn.__doc__ or "").lower(), f"{fn.__name__}'s docstring does not cite {cites}"
