"""The architecture's rules, read from the source (ast): layers that import only downward, no import cycle, small
modules, and only securefl.errors types raised to users.

The layers are docs/architecture.md's, lowest first; a module belongs to the layer of its longest matching name.
A new module must be placed in a layer here, or the layering test names it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import securefl

PACKAGE = Path(securefl.__file__).parent
MAX_LINES = 450
LAYERS = (  # lowest first; docs/architecture.md
    ("primitives", ("securefl.errors", "securefl.wire", "securefl.crypto", "securefl._kernels", "securefl.log",
                    "securefl.jsonfile")),
    ("data", ("securefl.codec", "securefl.keys", "securefl.session")),
    ("privacy", ("securefl.dp",)),
    # the Aggregator base sits with the round machinery it drives: every scheme subclasses it
    ("round", ("securefl.encoding", "securefl.protocol", "securefl.simulation", "securefl.report",
               "securefl.aggregator")),
    ("schemes", ("securefl.plaintext", "securefl.mpc", "securefl.he")),
    ("interface", ("securefl.schemes", "securefl.deploy", "securefl")),
    ("tools", ("securefl.audit", "securefl.bench", "securefl.flower", "securefl.fedavg", "securefl.datasets",
               "securefl.cli", "securefl.__main__")),
)
# built-in exceptions the library never raises to a caller (it raises securefl.errors types, which name what failed)
BUILTIN_ERRORS = frozenset({"ValueError", "TypeError", "KeyError", "RuntimeError", "IndexError", "LookupError",
                            "AssertionError", "ArithmeticError", "OverflowError", "ZeroDivisionError", "OSError",
                            "Exception", "BaseException"})


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = modules()


def _resolve(name: str) -> str | None:
    """The securefl module an import of `name` loads (a name inside a module: that module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside `if TYPE_CHECKING:` blocks (imports for annotations only, never run)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return out


def imports(name: str) -> dict[str, bool]:
    """The securefl modules `name` imports anywhere in its code -> whether only for type checking."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    typing_only = _type_checking_nodes(tree)
    out: dict[str, bool] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, level - 1 packages up
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            module = _resolve(target) if target.startswith("securefl") else None
            if module and module != name:
                out[module] = out.get(module, True) and id(node) in typing_only
    return out


def layer_of(name: str) -> int | None:
    """Index of the layer holding `name` (its longest matching prefix), None when no layer holds it."""
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            inside = name == prefix or (prefix != "securefl" and name.startswith(prefix + "."))  # the root: itself
            if inside and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` (a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_every_module_is_in_a_layer():
    assert [m for m in MODULES if layer_of(m) is None] == []


def test_no_import_runs_back_up():
    """A module imports only its own layer and the layers below (annotation-only imports included)."""
    upward = []
    for name in MODULES:
        mine = layer_of(name)
        for target in imports(name):
            theirs = layer_of(target)
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{name} ({LAYERS[mine][0]}) imports {target} ({LAYERS[theirs][0]})")
    assert upward == []


def test_import_graph_has_no_cycle():
    """No cycle among the imports that run (at module level or inside functions)."""
    graph = {name: {t for t, typing_only in imports(name).items() if not typing_only} for name in MODULES}
    assert cycle(graph) is None


def test_no_module_over_the_line_limit():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def _raised_name(node: ast.Raise) -> str | None:
    exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
    return exc.id if isinstance(exc, ast.Name) else None


def _caught_here(raise_node: ast.Raise, name: str, parents: dict[int, ast.AST]) -> bool:
    """Whether the raise sits in the body of a try, in the same function, whose handler catches `name` (an internal
    re-raise: the handler turns it into a securefl error)."""
    child, node = raise_node, parents.get(id(raise_node))
    while node is not None and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        if isinstance(node, ast.Try) and any(child is stmt for stmt in node.body):
            for handler in node.handlers:
                caught = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
                if any(isinstance(c, ast.Name) and c.id in (name, "Exception") for c in caught):
                    return True
        child, node = node, parents.get(id(node))
    return False


def builtin_raises(path: Path, root: Path = PACKAGE.parent) -> list[str]:
    """`raise <built-in exception>` in a file that no handler of the same try converts."""
    tree = ast.parse(path.read_text(), str(path))
    parents = {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and (name := _raised_name(node)) in BUILTIN_ERRORS:
            if not _caught_here(node, name, parents):
                out.append(f"{path.relative_to(root)}:{node.lineno} raises {name}")
    return out


def test_no_builtin_exception_is_raised_to_users():
    found = [line for path in MODULES.values() for line in builtin_raises(path)]
    assert found == []


def test_the_checks_can_fail(tmp_path):
    """The checkers find what they look for (a test of the tests)."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f(x):\n    try:\n        raise ValueError\n    except ValueError:\n        pass\n"
                      "    raise TypeError('to the caller')\n")
    lines = builtin_raises(sample, tmp_path)
    assert len(lines) == 1 and lines[0].endswith(":6 raises TypeError")
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None
    assert layer_of("securefl.dp.mechanisms") < layer_of("securefl.aggregator") < layer_of("securefl.plaintext")
    assert layer_of("securefl.audit") > layer_of("securefl.schemes") and layer_of("securefl.nowhere") is None
    assert imports("securefl.plaintext")["securefl.aggregator"] is False
