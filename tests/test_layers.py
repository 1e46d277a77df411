"""raydet's layers, as a test: the import graph of ``raydet/`` (function-level imports included,
read from the source, nothing imported) has no circle, and no module imports a layer above its own."""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "raydet"

#: lowest first; a module may import its own layer and the layers below it
LAYERS = [
    ("raydet.errors", "raydet.registry", "raydet._version", "raydet.logs"),
    ("raydet.ops", "raydet.progress"),
    ("raydet.data", "raydet.models"),
    ("raydet.engine",),
    ("raydet.config",),  # the schema checks type names against the registries of the layers below
    ("raydet.visualization", "raydet.analysis", "raydet.diagnose"),
    ("raydet.run",),  # plan, build, train
    ("raydet.apis",),  # mmdet's API
    ("raydet.launch",),  # the only one that imports ray
    ("raydet.cli_args",),
    ("raydet.cli_tools",),
    ("raydet.cli", "raydet.__main__", "raydet"),
]


def modules() -> dict:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def import_graph() -> dict:
    """``{module: {raydet modules it imports}}``; ``from pkg import name`` counts as the module
    ``pkg.name`` when that is a module, else as ``pkg``."""
    mods = modules()
    graph = {}
    for name, path in mods.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                base = package[:len(package) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    targets.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in mods else target)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        graph[name] = {t for t in targets if t in mods and t != name}
    return graph


def layer(module: str) -> int:
    best = None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (i, len(prefix))
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[0]


def circles(graph: dict) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_circle():
    assert circles(import_graph()) == []


def test_no_module_imports_a_layer_above_its_own():
    upward = [f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)})"
              for m, targets in import_graph().items() for t in sorted(targets) if layer(t) > layer(m)]
    assert upward == []


def test_only_launch_imports_ray():
    offenders = []
    for name, path in modules().items():
        if layer(name) == layer("raydet.launch"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            offenders += [f"{name} imports {n}" for n in names if n == "ray" or n.startswith("ray.")]
    assert offenders == []


def test_the_checker_sees_a_circle_and_an_upward_import():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    assert layer("raydet.config.schema") > layer("raydet.engine.runner")


def test_no_function_is_longer_than_60_lines():
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert long == []
