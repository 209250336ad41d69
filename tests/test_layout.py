"""The package's layout: no import cycles between its modules, lazy (inside a function) or not; the
official recipes' numbers live as data in the config files only."""

import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "adafocus_jax")


def _modules() -> dict[str, str]:
    """Dotted module name → file, for every module of the package."""
    out = {}
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            parts = os.path.relpath(path, os.path.dirname(ROOT))[:-3].split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _import_graph() -> dict[str, set[str]]:
    """Module → the package modules it imports anywhere in its file (top level or in functions)."""
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {m: set() for m in modules}
    for module, path in modules.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                target = resolve(name) if name.startswith("adafocus_jax") else None
                if target is not None and target != module:
                    graph[module].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, done = [], set()

    def visit(node, stack):
        if node in stack:
            found.append(stack[stack.index(node):] + [node])
            return
        if node in done:
            return
        stack.append(node)
        for nxt in sorted(graph[node]):
            visit(nxt, stack)
        stack.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycles():
    graph = _import_graph()
    # The graph is real: the training loop reaches the model and the hand-off.
    assert {"adafocus_jax.handoff", "adafocus_jax.models"} <= graph["adafocus_jax.train.loop"] | \
        graph["adafocus_jax.train.state"]
    cycles = _cycles(graph)
    assert not cycles, "import cycles (a lower layer imports a higher one):\n" + "\n".join(
        " -> ".join(c) for c in cycles)


CONFIGS = os.path.join(os.path.dirname(ROOT), "configs")
RECIPE_TABLES = ("PATCH_SIZES", "STAGES", "V2")


def _assignments(path: str) -> dict[str, ast.expr]:
    """Module-level `NAME = value` of a file."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    return {t.id: node.value for node in tree.body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)}


def _is_data(node: ast.expr) -> bool:
    """A literal: constants, tuples / lists / dicts of them and `dict(key=literal, ...)`."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return _is_data(node.operand)
    if isinstance(node, (ast.Tuple, ast.List)):
        return all(_is_data(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return all(k is not None and _is_data(k) for k in node.keys) and all(
            _is_data(v) for v in node.values)
    if isinstance(node, ast.Call):
        return (isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args
                and all(k.arg is not None and _is_data(k.value) for k in node.keywords))
    return False


def test_the_official_recipes_are_data_in_the_config_files():
    """configs/sthv2.py and configs/actnet.py write their tables out as literals; sthv1, fcvid and
    minik reuse them (no second copy); no package module imports configs/ or loads a config file
    by itself (config_lib and inference.load_config load the files their callers name)."""
    for name in ("sthv2", "actnet"):
        assigned = _assignments(os.path.join(CONFIGS, f"{name}.py"))
        for table in RECIPE_TABLES:
            assert table in assigned and _is_data(assigned[table]), (name, table)
    for name, home in (("sthv1", "_STHV2"), ("fcvid", "_ACTNET"), ("minik", "_ACTNET")):
        assigned = _assignments(os.path.join(CONFIGS, f"{name}.py"))
        for table in RECIPE_TABLES:
            value = assigned[table]
            if isinstance(value, ast.Call):   # dict(home.V2, what differs=...)
                value = value.args[0]
            assert isinstance(value, ast.Attribute) and value.attr == table, (name, table)
            assert isinstance(value.value, ast.Name) and value.value.id == home, (name, table)
    graph = _import_graph()
    assert not any(t.startswith("configs") for targets in graph.values() for t in targets)
    loaders = {}
    for module, path in _modules().items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) or isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [
                    a.name for a in node.names]
                assert not any(n == "configs" or n.startswith("configs.") for n in names), module
            if isinstance(node, ast.Call):
                called = getattr(node.func, "attr", getattr(node.func, "id", None))
                if called in ("load_config_module", "sibling_config"):
                    loaders.setdefault(module, []).append(called)
    assert loaders == {"adafocus_jax.config_lib": ["load_config_module"],
                       "adafocus_jax.inference": ["load_config_module"]}
    # The check can fail: a table written as a reference is not data.
    assert not _is_data(ast.parse("x = dict(a=OTHER.B)").body[0].value)
    assert _is_data(ast.parse("x = {'s': dict(lr=dict(p=-1e-3), m=(1, 2))}").body[0].value)
