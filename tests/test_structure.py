"""The shape of the marble_eval tree, read with ast: no import cycles, argparse only in the CLI, public
APIs of other libraries only (no ctypes, no mallopt, no torch._*, no private attributes of their objects)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import marble_eval

PACKAGE_DIR = Path(marble_eval.__file__).resolve().parent
PACKAGE = "marble_eval"

# Underscore names that are documented public API.
PUBLIC_UNDERSCORE_ATTRIBUTES = {"_exit",  # os._exit
                                "_replace", "_asdict", "_fields", "_make", "_field_defaults"}  # namedtuple
# Internals of other libraries' objects reached by name or as a state key (torch.nn.Module, soundfile).
KNOWN_FOREIGN_INTERNALS = {"_modules", "_parameters", "_buffers", "_non_persistent_buffers_set",
                           "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_state_dict_hooks",
                           "_load_state_dict_pre_hooks", "_info", "_file"}


@dataclass(frozen=True)
class Module:
    name: str          # dotted, e.g. marble_eval.datasets.registry (a package: marble_eval.datasets)
    path: Path
    is_package: bool
    tree: ast.Module

    def where(self, node: ast.AST) -> str:
        return f"{self.path.relative_to(PACKAGE_DIR.parent)}:{getattr(node, 'lineno', '?')}"


def _modules() -> dict[str, Module]:
    modules = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        name = ".".join(parts)
        modules[name] = Module(name, path, is_package, ast.parse(path.read_text(), filename=str(path)))
    return modules


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node, module- and function-level, except the bodies of ``if TYPE_CHECKING:`` (never run)."""
    nodes, stack = [], [tree]
    while stack:
        node = stack.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return nodes


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    """The absolute module name of ``from <...> import``, relative levels resolved."""
    if not node.level:
        return node.module or ""
    base = module.name.split(".")
    if not module.is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imported(module: Module) -> list[tuple[str, ast.AST]]:
    """(absolute module name, node) for every module that ``module`` imports when it runs."""
    found = []
    for node in _runtime_nodes(module.tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            found.append((source, node))
            # `from pkg import sub` imports the submodule pkg.sub when there is one
            found += [(f"{source}.{alias.name}", node) for alias in node.names
                      if f"{source}.{alias.name}" in MODULES]
    return found


def import_graph() -> dict[str, dict[str, str]]:
    """marble_eval module -> {marble_eval module it makes Python run: where}.

    Importing ``a.b.c`` runs the ``__init__`` of ``a`` and ``a.b`` first, so those count too, except the
    importer's own enclosing packages (already running when the importer runs).
    """
    graph: dict[str, dict[str, str]] = {name: {} for name in MODULES}
    for module in MODULES.values():
        own = {".".join(module.name.split(".")[:i]) for i in range(1, module.name.count(".") + 1 + module.is_package)}
        for target, node in _imported(module):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix in MODULES and prefix not in own and prefix != module.name:
                    graph[module.name].setdefault(prefix, module.where(node))
    return graph


def find_cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """One cycle (a path back to its start) per strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(node: str) -> None:  # Tarjan, iterative over the neighbour lists
        work = [(node, iter(sorted(graph[node])))]
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        while work:
            current, neighbours = work[-1]
            for nxt in neighbours:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[current] = min(low[current], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[current])
                if low[current] == index[current]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == current:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            strongconnect(node)

    cycles = []
    for component in components:  # shortest way from the first member back to itself, inside the component
        members, start = set(component), component[0]
        paths = {start: [start]}
        frontier = [start]
        cycle = None
        while frontier and cycle is None:
            nxt_frontier = []
            for node in frontier:
                for nxt in sorted(graph[node]):
                    if nxt == start:
                        cycle = paths[node] + [start]
                        break
                    if nxt in members and nxt not in paths:
                        paths[nxt] = paths[node] + [nxt]
                        nxt_frontier.append(nxt)
                if cycle:
                    break
            frontier = nxt_frontier
        cycles.append(cycle or component)
    return cycles


def _describe(cycle: list[str], graph: dict[str, dict[str, str]]) -> str:
    return " -> ".join(f"{a} ({graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def test_the_cycle_finder_finds_cycles_through_function_level_and_package_imports() -> None:
    graph = {"a": {"b": "a.py:1"}, "b": {"c": "b.py:1"}, "c": {"a": "c.py:9"}, "d": {"a": "d.py:1"}, "e": {}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b": ""}, "b": {}}) == []


def test_import_graph_resolves_relative_package_and_function_level_imports() -> None:
    graph = import_graph()
    assert "marble_eval.errors" in graph["marble_eval.cli"]            # module-level, in an __init__
    assert "marble_eval.cli" in graph["marble_eval.__main__"]
    assert "marble_eval.datasets" not in graph["marble_eval.datasets.registry"]  # its own package
    assert all(target.startswith(PACKAGE) for targets in graph.values() for target in targets)


def test_no_import_cycle_inside_marble_eval() -> None:
    graph = import_graph()
    cycles = find_cycles(graph)
    assert not cycles, "import cycles (move the shared piece down a layer):\n" + "\n".join(
        _describe(cycle, graph) for cycle in cycles)


def test_only_the_cli_imports_argparse() -> None:
    offenders = [module.where(node) for module in MODULES.values()
                 if not (module.name == f"{PACKAGE}.cli" or module.name.startswith(f"{PACKAGE}.cli."))
                 for target, node in _imported(module) if target.split(".")[0] == "argparse"]
    assert not offenders, f"argparse outside marble_eval/cli: {offenders}"


def test_no_ctypes_and_no_mallopt() -> None:
    offenders = []
    for module in MODULES.values():
        offenders += [module.where(node) for target, node in _imported(module)
                      if target.split(".")[0] in ("ctypes", "_ctypes")]
        for node in ast.walk(module.tree):
            names = {getattr(node, "id", None), getattr(node, "attr", None), getattr(node, "name", None)}
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.add(node.value)
            if names & {"mallopt", "ctypes", "CDLL"}:
                offenders.append(module.where(node))
    assert not offenders, f"ctypes / mallopt in marble_eval: {sorted(set(offenders))}"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__")) \
        and name not in PUBLIC_UNDERSCORE_ATTRIBUTES


def _annotation_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside annotations (not run under `from __future__ import annotations`)."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        annotations = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            annotations.append(node.returns)
            arguments = node.args
            for arg in arguments.posonlyargs + arguments.args + arguments.kwonlyargs + [arguments.vararg,
                                                                                        arguments.kwarg]:
                annotations.append(arg.annotation if arg else None)
        elif isinstance(node, ast.AnnAssign):
            annotations.append(node.annotation)
        for annotation in annotations:
            if annotation is not None:
                inside.update(id(child) for child in ast.walk(annotation))
    return inside


def _foreign_aliases(module: Module) -> dict[str, str]:
    """Local name -> the other library's module or name it is bound to by an import."""
    aliases = {}
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top != PACKAGE:
                    aliases[alias.asname or top] = alias.name if alias.asname else top
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] != PACKAGE:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def _chain(node: ast.expr) -> list[str] | None:
    """['torch', 'nn', '_x'] for torch.nn._x; None when the chain does not start at a plain name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id] + parts[::-1]


def private_library_names(module: Module) -> list[str]:
    """Where ``module`` reaches a private name of another library's module (torch._x, from x._y import z,
    getattr(torch, "_x")); annotations are left out (never run)."""
    aliases = _foreign_aliases(module)
    annotations = _annotation_nodes(module.tree)
    found = []
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            found += [f"{module.where(node)} import {a.name}" for a in node.names
                      if a.name.split(".")[0] != PACKAGE and any(_private(p) for p in a.name.split(".")[1:])]
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] != PACKAGE:
            parts = (node.module or "").split(".")[1:] + [a.name for a in node.names]
            if any(_private(p) for p in parts):
                found.append(f"{module.where(node)} from {node.module} import {', '.join(a.name for a in node.names)}")
        elif isinstance(node, ast.Attribute) and id(node) not in annotations:
            chain = _chain(node)
            if chain and chain[0] in aliases and _private(chain[-1]):
                found.append(f"{module.where(node)} {aliases[chain[0]]}{'.'.join([''] + chain[1:])}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "setattr")
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
              and isinstance(node.args[1].value, str) and _private(node.args[1].value)):
            chain = _chain(node.args[0])
            if chain and chain[0] in aliases:
                found.append(f"{module.where(node)} {node.func.id}({'.'.join(chain)}, {node.args[1].value!r})")
    return found


def _own_private_names() -> set[str]:
    """Every underscore name marble_eval itself defines (functions, classes, attributes, assignments)."""
    names: set[str] = set()
    for module in MODULES.values():
        for node in ast.walk(module.tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and \
                    node.attr not in KNOWN_FOREIGN_INTERNALS:
                names.add(node.attr)
            elif isinstance(node, ast.alias):
                names.add(node.asname or node.name.split(".")[0])
            elif isinstance(node, ast.arg):
                names.add(node.arg)
    return {name for name in names if _private(name)}


def private_object_attributes(module: Module, own: set[str]) -> list[str]:
    """Where ``module`` reads or writes a private attribute marble_eval does not define on an object that is
    not self/cls (e.g. a soundfile handle's ._info), or reaches a known library internal by name or key
    (self._modules, state["_modules"]). Chains from an imported module are private_library_names' part."""
    aliases = _foreign_aliases(module)
    found = []
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            chain = _chain(node)
            if chain and chain[0] in aliases:
                continue
            base = node.value
            if isinstance(base, ast.Name) and base.id in ("self", "cls"):
                if node.attr in KNOWN_FOREIGN_INTERNALS:
                    found.append(f"{module.where(node)} {base.id}.{node.attr}")
                continue
            if isinstance(base, ast.Call) and isinstance(base.func, ast.Name) and base.func.id == "super":
                continue
            if node.attr not in own or node.attr in KNOWN_FOREIGN_INTERNALS:
                found.append(f"{module.where(node)} .{node.attr}")
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and \
                node.slice.value in KNOWN_FOREIGN_INTERNALS:
            found.append(f"{module.where(node)} [{node.slice.value!r}]")
    return found


def test_the_private_name_checks_catch_what_they_should() -> None:
    source = (
        "import torch\nimport torch.nn.functional as F\nimport soundfile as sf\nfrom torch import _C\n"
        "from torch._dynamo import config\n"
        "def f(x: torch._Private) -> None:\n"
        "    torch._fused_adam_(x)\n    F._pad(x)\n    getattr(torch, '_foreach_add_')(x)\n"
        "    handle = sf.SoundFile(x)\n    handle._info.seekable = 0\n    state = x.__dict__.copy()\n"
        "    state['_modules'] = {}\n    torch.__version__\n    x._mine\n    self._cache\n"
        "class A:\n    def g(self):\n        self._mine = 1\n")
    module = Module(f"{PACKAGE}.example", PACKAGE_DIR / "example.py", False, ast.parse(source))
    library = private_library_names(module)
    assert {entry.split(" ", 1)[1] for entry in library} == {
        "from torch import _C", "from torch._dynamo import config", "torch._fused_adam_",
        "torch.nn.functional._pad", "getattr(torch, '_foreach_add_')"}
    objects = private_object_attributes(module, own={"_mine"})
    assert {entry.split(" ", 1)[1] for entry in objects} == {"._info", "['_modules']"}


def test_no_private_names_of_torch_or_other_libraries() -> None:
    offenders = [entry for module in MODULES.values() for entry in private_library_names(module)]
    assert not offenders, "private names of other libraries (use their public API):\n" + "\n".join(offenders)


def test_no_private_attributes_of_other_libraries_objects() -> None:
    own = _own_private_names()
    offenders = [entry for module in MODULES.values() for entry in private_object_attributes(module, own)]
    assert not offenders, "private attributes of other libraries' objects (use their public API):\n" + "\n".join(
        offenders)


def test_the_integration_tier_names_existing_tests() -> None:
    from conftest import INTEGRATION_FILES, INTEGRATION_TESTS

    tests_dir = Path(__file__).resolve().parent
    missing = [name for name in INTEGRATION_FILES if not (tests_dir / name).is_file()]
    for entry in INTEGRATION_TESTS:
        file, function = entry.split("::")
        path = tests_dir / file
        defined = {node.name for node in ast.walk(ast.parse(path.read_text()))
                   if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))} if path.is_file() else set()
        if function not in defined:
            missing.append(entry)
    assert not missing, f"tests/conftest.py lists tests that do not exist (renamed?): {sorted(missing)}"


# The pipeline's layers: a stage may import the base modules and the stages listed for it, never the others
# (the CLI, the API modules and the report sit on top and may import anything below them).
STAGES = ("audio", "metrics", "datasets", "models", "features", "probes", "results", "report")
MAY_IMPORT = {
    "audio": set(),
    "metrics": set(),
    "datasets": {"audio", "metrics"},
    "models": {"audio"},
    "probes": {"metrics"},
    "results": {"metrics"},
    "features": {"audio", "datasets", "models"},
    "report": {"metrics", "results", "datasets"},
}


def layer_violations(graph: dict[str, dict[str, str]]) -> list[str]:
    """``module -> stage (where)`` for every import of a stage that the importer's stage may not import."""
    def stage(module: str) -> str | None:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 and parts[1] in STAGES else None

    found = []
    for module, targets in graph.items():
        own = stage(module)
        if own is None:
            continue
        for target, where in targets.items():
            other = stage(target)
            if other is not None and other != own and other not in MAY_IMPORT[own]:
                found.append(f"{module} -> {target} ({where})")
    return found


def test_the_layer_checker_flags_a_stage_importing_a_later_one() -> None:
    graph = {"marble_eval.probes.data": {"marble_eval.datasets.base": "probes/data.py:9"},
             "marble_eval.features.extract": {"marble_eval.datasets.base": "features/extract.py:3"}}
    assert layer_violations(graph) == ["marble_eval.probes.data -> marble_eval.datasets.base (probes/data.py:9)"]


def test_each_stage_imports_only_the_layers_below_it() -> None:
    violations = layer_violations(import_graph())
    assert not violations, "layer rule broken (move the shared piece down):\n" + "\n".join(violations)


MAX_PARAMETERS = 10  # issue #20: outside the public keyword API (which takes **options), no more


def too_many_parameters(tree: ast.AST, where: str) -> list[str]:
    """``where:line name (n)`` of every function with more than MAX_PARAMETERS named parameters (self/cls
    not counted; *args and **kwargs count as none)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            names = [a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]]
            count = len(names) - (1 if names and names[0] in ("self", "cls") else 0)
            if count > MAX_PARAMETERS:
                found.append(f"{where}:{node.lineno} {node.name} ({count})")
    return found


def test_the_parameter_count_sees_keyword_only_parameters() -> None:
    tree = ast.parse("def f(a, b, *, c, d, e, f, g, h, i, j, k):\n    pass\n\nclass C:\n    def m(self, a):\n        pass\n")
    assert too_many_parameters(tree, "x.py") == ["x.py:1 f (11)"]


def test_no_function_takes_more_than_ten_parameters() -> None:
    found = [hit for module in MODULES.values()
             for hit in too_many_parameters(module.tree, str(module.path.relative_to(PACKAGE_DIR.parent)))]
    assert not found, "group them into an options object:\n" + "\n".join(found)
