"""Package structure: no module imports one that (directly or not) imports it back, and no package does either
(a package here is a subpackage such as `train` or a top-level module such as `oracle`)."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "activation_oracles"


def _module_graph() -> dict[str, set[str]]:
    mods = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    graph = {m: set() for m in mods}
    for m, p in mods.items():
        base = m.split(".") if p.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = ".".join(base[: len(base) - node.level + 1] + [node.module or ""]).strip(".") \
                    if node.level else node.module or ""
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in mods]
                graph[m] |= {t for t in (subs or [target]) if t in mods and t != m}
            elif isinstance(node, ast.Import):
                graph[m] |= {a.name for a in node.names if a.name in mods and a.name != m}
    return graph


def test_no_import_cycles_even_through_function_level_imports():
    graph = _module_graph()

    def reaches(start, goal, seen):
        for nxt in graph[start]:
            if nxt == goal or (nxt not in seen and not seen.add(nxt) and reaches(nxt, goal, seen)):
                return True
        return False

    # A package's __init__ importing its own modules is how packages work, not a cycle.
    cycles = [m for m in graph if not m.endswith(tuple(("activation_oracles", ".data", ".train", ".eval")))
              and reaches(m, m, set())]
    assert not cycles, f"modules on an import cycle: {sorted(cycles)}"


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def test_no_package_import_cycles():
    # Module cycles are not enough: train.loop -> plan -> train.step is no module cycle, yet it tied the
    # planner and the trainer into one knot. Modules are collapsed to their package; a package that reaches
    # itself back through another is on a cycle.
    graph: dict[str, set[str]] = {}
    via: dict[tuple[str, str], str] = {}
    for m, targets in _module_graph().items():
        a = _package(m)
        if a == "activation_oracles":  # the root's lazy exports reach everything by design
            continue
        graph.setdefault(a, set())
        for t in targets:
            b = _package(t)
            if b != a and b != "activation_oracles":
                graph[a].add(b)
                via.setdefault((a, b), f"{m} -> {t}")

    def reachable(start):
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reach = {p: reachable(p) for p in graph}
    knots = sorted(f"{a} <-> {b} ({via[a, b]})" for a in graph for b in graph[a] if a in reach[b])
    assert not knots, "packages on an import cycle (edge, one import that makes it):\n" + "\n".join(knots)


def test_the_task_families_are_defined_once():
    # The trainer's loss slots (train/packed.STAT_SLOTS), the mixture and the CLIs all count on one tuple.
    homes = [str(p.relative_to(PKG)) for p in PKG.rglob("*.py") for node in ast.walk(ast.parse(p.read_text()))
             if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "TASKS" for t in node.targets)]
    assert homes == ["data/schema.py"], homes
    from activation_oracles.data.schema import TASKS
    from activation_oracles.train import batching, packed

    assert batching.TASKS is TASKS and (packed.DUMMY_TASK, packed.STAT_SLOTS) == (len(TASKS) + 1, len(TASKS) + 2)


def test_no_function_over_80_lines():
    # A function that long holds several ideas; each should get its own name. Measured from `def` to its
    # last line, signature included.
    long = sorted((n.end_lineno - n.lineno + 1, f"{p.relative_to(PKG)}:{n.lineno} {n.name}")
                  for p in PKG.rglob("*.py") for n in ast.walk(ast.parse(p.read_text()))
                  if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno >= 80)
    assert not long, f"functions over 80 lines: {long}"
