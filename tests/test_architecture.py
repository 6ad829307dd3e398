"""The stages import downwards only: no import cycle between nin_cli's modules, and the CLI
module holds no command logic that another module imports back."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nin_cli"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the nin_cli modules it imports, at module level or inside a function alike (a
    function-level import is a cycle deferred, not removed). `from pkg import name` counts as an
    import of pkg.name where that is a module, else of pkg."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("nin_cli"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    edges.add(sub if sub in modules else node.module)
        graph[name] = {e for e in edges if e != name and e in modules}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
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


def test_no_import_cycle_in_nin_cli():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_nothing_imports_the_cli_module():
    graph = import_graph()
    assert sorted(m for m, edges in graph.items() if "nin_cli.cli" in edges and m != "nin_cli.__main__") == []
    plugins = Path(__file__).resolve().parents[1] / "hydra_plugins"
    assert not [p for p in plugins.rglob("*.py") if "nin_cli.cli" in p.read_text()]


# The stage order, written down once, lowest first: a module imports only modules of its own stage
# or below. A new module fails test_every_module_imports_only_its_stage_or_below until placed here.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("errors", "seeding", "faults", "identity", "units", "version", "assets", "cluster", "locks")),
    ("records", ("records", "loggers", "provenance")),
    (
        "parts",
        (
            "corruptions",
            "noise",
            "objectives",
            "optimizers",
            "conv_block",
            "models",
            "user_model",
            "user_data",
            "data",
            "network",
            "hessian",
            "perturbations",
        ),
    ),  # fmt: skip
    ("config", ("schema", "sources", "config")),
    ("preflight", ("preflight",)),
    ("engine", ("train", "train.*")),
    ("analysis", ("analysis", "analysis.*")),
    ("robustness", ("robustness",)),
    ("runner", ("runner", "ensemble_job", "callbacks")),
    ("interface", ("api", "commands", "completion", "cli", "__main__", "")),  # "": the package itself
]


def stage_of(module: str) -> int | None:
    short = module.removeprefix("nin_cli").removeprefix(".")
    for index, (_, names) in enumerate(STAGES):
        for name in names:
            if short == name or (name.endswith(".*") and short.startswith(name[:-1])):
                return index
    return None


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Imports that run back up the stage order."""
    return [
        f"{m} ({STAGES[stage_of(m)][0]}) -> {e} ({STAGES[stage_of(e)][0]})"
        for m in sorted(graph)
        for e in sorted(graph[m])
        if stage_of(e) > stage_of(m)
    ]


def test_every_module_imports_only_its_stage_or_below():
    graph = import_graph()
    unplaced = sorted(m for m in graph if stage_of(m) is None)
    assert unplaced == [], f"place these modules in STAGES: {unplaced}"
    assert upward(graph) == []


def test_the_stage_rule_finds_an_import_that_runs_back_up():
    """The import train/jobs.py had before the runner existed."""
    graph = {"nin_cli.train.loop": {"nin_cli.robustness", "nin_cli.records"}, "nin_cli.robustness": set(), "nin_cli.records": set()}
    assert upward(graph) == ["nin_cli.train.loop (engine) -> nin_cli.robustness (robustness)"]
