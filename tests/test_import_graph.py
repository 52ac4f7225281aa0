"""The one-way imports of docs/design-contract.md: planner -> fitting -> data; reports -> fitting, data; engine -> data.

A static scan of every ``import`` statement (module level and inside functions) of the five
packages; ``workflow`` sits above them all and may import anything, none of them imports it.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("data", "engine", "fitting", "planner", "reports", "workflow")
ALLOWED = {"data": set(), "engine": {"data"}, "fitting": {"data"}, "planner": {"fitting", "data"},
           "reports": {"fitting", "data"}, "workflow": set(PACKAGES)}

# Known back edges, listed so they stay visible (none today: the engine's online stop reaches
# fitting through the entry point prunelaw.stop_forecasters, never an import).
KNOWN: set[tuple[str, str, str]] = set()


def _edges():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
                for name in names:
                    top = name.split(".")[0]
                    if top in PACKAGES and top != package:
                        yield package, top, f"{path.relative_to(ROOT)}:{node.lineno}"


def test_no_back_edges_between_the_packages():
    bad = [f"{src} -> {dst} ({where})" for src, dst, where in _edges()
           if dst not in ALLOWED[src] and (src, dst, where.split(":")[0]) not in KNOWN]
    assert not bad, "imports against the one-way rule of docs/design-contract.md:\n" + "\n".join(bad)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_edges() -> dict[str, set[str]]:
    """module -> first-party modules it imports (module level and inside functions)."""
    paths = {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}
    edges: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges[name].update(a.name for a in node.names if a.name in paths)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                edges[name].update(t for t in targets if t in paths and t != name)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles_between_modules():
    """A cycle (even through an import inside a function) means two modules are one concept
    split in two, or one reaches back up: both make the code order-dependent to read and load."""
    cycles = _cycles(_module_edges())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_pruning_package_never_imports_the_training_engine():
    """engine.pruning keeps scores, masks and surgery; its trained stages get the training
    engine's loop as a ``trainer`` (engine.pruning.stage.Trainer), so the edge runs one way."""
    bad = sorted(f"{module} -> {target}" for module, targets in _module_edges().items()
                 if module.startswith("engine.pruning") for target in targets if target.startswith("engine.train"))
    assert not bad, "\n".join(bad)
