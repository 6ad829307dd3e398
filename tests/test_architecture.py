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
    assert sorted(m for m, edges in graph.items() if "nin_cli.interface.cli" in edges and m != "nin_cli.__main__") == []
    plugins = Path(__file__).resolve().parents[1] / "hydra_plugins"
    assert not [p for p in plugins.rglob("*.py") if "nin_cli.interface.cli" in p.read_text()]


# The stages are nin_cli's folders, lowest first: a module imports only modules of its own folder or
# of one below it. The modules at the package's top are the base every stage uses (errors, seeds,
# units, run identity, factories); the package itself and __main__ are entry points, with the
# interface. A new folder fails test_the_order_names_every_folder until it is placed here.
ORDER = ("", "records", "data", "nets", "config", "train", "analysis", "probe", "robustness", "interface")
ENTRY_POINTS = ("", "__main__")


def folders() -> set[str]:
    """nin_cli's folders that hold modules (assets/ holds data only)."""
    return {p.name for p in PACKAGE.iterdir() if p.is_dir() and any(f.name != "__init__.py" for f in p.glob("*.py"))}


def stage_of(module: str) -> int | None:
    short = module.removeprefix("nin_cli").removeprefix(".")
    if short in ENTRY_POINTS:
        return ORDER.index("interface")
    folder = short.split(".")[0]
    folder = folder if folder in folders() else ""  # a top-level module, or assets/ (data)
    return ORDER.index(folder) if folder in ORDER else None


def stage_name(module: str) -> str:
    return ORDER[stage_of(module)] or "base"


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Imports that run back up the stage order."""
    return [f"{m} ({stage_name(m)}) -> {e} ({stage_name(e)})" for m in sorted(graph) for e in sorted(graph[m]) if stage_of(e) > stage_of(m)]


def test_the_order_names_every_folder():
    assert folders() == set(ORDER) - {""}


def test_the_tests_mirror_the_stages():
    """tests/<stage>/ holds the tests of nin_cli/<stage>/; at tests/ itself only what spans them (the
    architecture, the docs, the long checks) and the shared harness."""
    tests = Path(__file__).resolve().parent
    test_folders = {p.name for p in tests.iterdir() if p.is_dir() and any(p.glob("test_*.py"))}
    assert test_folders == folders()
    assert {p.name for p in tests.glob("test_*.py")} == {"test_architecture.py", "test_docs.py", "test_slow.py"}


def test_every_module_imports_only_its_stage_or_below():
    graph = import_graph()
    unplaced = sorted(m for m in graph if stage_of(m) is None)
    assert unplaced == [], f"place these modules in a stage's folder: {unplaced}"
    assert upward(graph) == []


def test_the_stage_rule_finds_an_import_that_runs_back_up():
    """An import from the engine up to robustness, as one a training loop that evaluated would need."""
    graph = {
        "nin_cli.train.loop": {"nin_cli.robustness.evaluate", "nin_cli.records.store"},
        "nin_cli.robustness.evaluate": set(),
        "nin_cli.records.store": set(),
    }
    assert upward(graph) == ["nin_cli.train.loop (train) -> nin_cli.robustness.evaluate (robustness)"]


def test_a_batched_sweep_of_values_is_composed_once_and_each_job_resolved_once(tmp_path, monkeypatch):
    """`nin train -m hydra/launcher=batched` in this process: the pre-flight composes the command
    once, which is the sweep's one structure too (its jobs differ in values only:
    preflight.JobComposer starts from the command's composition), and resolves each job once; the sweeper
    (hydra/sweeper=grid) does not compose a job again to check it, the launcher makes its Hydra config from
    that composition, and structuring, batching and training take its RunConfig. (The report reads each
    run's config.yaml: `load`, not `resolve`.)"""
    from collections import Counter

    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    from nin_cli.config import plan, preflight
    from nin_cli.config import resolve as config
    from nin_cli.interface import cli

    resolved: Counter = Counter()
    nin_composed: Counter = Counter()
    hydra_composed: Counter = Counter()
    real_resolve, real_load = config.resolve, ConfigLoaderImpl.load_sweep_config

    def counting_resolve(cfg, validate=True):
        run = real_resolve(cfg, validate)
        resolved[(run.flat["noise.sigma"], run.flat["seed"])] += 1
        return run

    def counting_sweep_config(self, master_config, sweep_overrides):
        hydra_composed[tuple(sorted(o for o in sweep_overrides if o.startswith(("noise", "seed"))))] += 1
        return real_load(self, master_config, sweep_overrides)

    import hydra

    real_hydra_compose = hydra.compose

    def counting_compose(config_name=None, overrides=(), **kw):
        nin_composed[tuple(sorted(o for o in overrides if o.startswith(("noise", "seed"))))] += 1
        return real_hydra_compose(config_name, overrides=overrides, **kw)

    for module in (config, preflight, plan):
        monkeypatch.setattr(module, "resolve", counting_resolve, raising=False)
    monkeypatch.setattr(hydra, "compose", counting_compose)
    monkeypatch.setattr(ConfigLoaderImpl, "load_sweep_config", counting_sweep_config)
    from nin_cli.train import ensembles

    monkeypatch.setattr(ensembles, "resolve", counting_resolve)
    args = ["train", "-m", "hydra/launcher=batched", "dataset=fashion_mnist_mini", "dataset.train_size=256", "dataset.test_size=100",
            "model.width=16", "epochs=1", "hessian.samples=32", "eval.train_samples=256", "progress=false",
            "noise.sigma=1,2", "seed=0,1", f"hydra.sweep.dir={tmp_path}"]  # fmt: skip
    cli.main(args)  # returns: the sweep ran
    jobs = {(float(s), k) for s in (1, 2) for k in (0, 1)}
    assert set(resolved) == jobs and set(resolved.values()) == {1}, resolved
    assert nin_composed == Counter({(): 1}), nin_composed  # the command (its sweep's values aside), the jobs' one structure too
    assert hydra_composed == Counter(), hydra_composed  # neither the sweeper's check nor the launcher composes a job again
    assert len(list(tmp_path.glob("*/metrics.csv"))) == 4


def test_a_jobs_config_made_from_the_pre_flight_equals_hydras_own(tmp_path, monkeypatch):
    """The batched launchers make each job's config (Hydra's node included) from the pre-flight's
    composition instead of composing it again: key for key what Hydra's load_sweep_config gives,
    for a sweep that changes group options (model, and with them Hydra's runtime.choices)."""
    import sys

    from hydra.core.plugins import Plugins
    from omegaconf import OmegaConf, open_dict

    from nin_cli.interface import cli

    Plugins.instance()  # Hydra's scan loads the plugin modules anew: patch the module it will use
    bl = sys.modules["hydra_plugins.nin_batched_launcher.batched_launcher"]

    compared = []
    made = bl.CollectingLauncher.job_config

    def both(self, overrides, idx):
        ours = made(self, overrides, idx)
        theirs = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(theirs):  # the job's number, which the launcher sets as it makes the job's config
            theirs.hydra.job.id = theirs.hydra.job.num = idx
        assert OmegaConf.to_yaml(ours) == OmegaConf.to_yaml(theirs)
        assert OmegaConf.to_yaml(ours, resolve=False) == OmegaConf.to_yaml(theirs, resolve=False)
        assert OmegaConf.is_struct(ours) == OmegaConf.is_struct(theirs) and str(ours.hydra.sweep.dir) == str(theirs.hydra.sweep.dir)
        compared.append(overrides)
        return ours

    monkeypatch.setattr(bl.CollectingLauncher, "job_config", both)
    args = ["train", "-m", "hydra/launcher=batched", "dataset=fashion_mnist_mini", "dataset.train_size=256", "dataset.test_size=100",
            "model=mlp,fc", "model.width=16", "epochs=1", "hessian.samples=32", "eval.train_samples=256", "progress=false",
            "noise.sigma=1,2", f"hydra.sweep.dir={tmp_path}"]  # fmt: skip
    cli.main(args)
    assert len(compared) == 4


# Optional extras (and a plugin's own package) are imported where they are used, so that nin runs
# without them and says which extra a command needs.
EXTRAS = ("mlflow", "wandb", "torch.utils.tensorboard", "torchattacks", "skimage", "submitit", "lightning", "transformers", "torchvision")


def function_level_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import):
                    found += [a.name for a in inner.names]
                elif isinstance(inner, ast.ImportFrom) and inner.module:
                    found.append(inner.module)
    return found


def test_an_import_inside_a_function_is_an_extra_or_its_module_says_why():
    """A file's top shows what it uses. The exceptions: an optional extra, and a module whose top
    says why it loads a stage where it is used (a comment `# Imported where used: ...`): the CLI's
    start-up, completion, config read without torch."""
    unexplained = {
        str(path.relative_to(PACKAGE.parent)): sorted({m for m in function_level_imports(path) if not m.startswith(EXTRAS)})
        for path in sorted(PACKAGE.rglob("*.py"))
        if "# Imported where used: " not in path.read_text()
    }
    assert {f: m for f, m in unexplained.items() if m} == {}


PROCESS_RUNNERS = {"nin", "nin_started", "forked_train"}  # tests/harness.py: nin as a process of its own
OUT_OF_TEST_FAST = ("e2e", "slurm", "install", "launchers", "slow")  # the marks `make test-fast` leaves out


def process_tests(source: str) -> dict[str, bool]:
    """Each test of a test module's source: whether it runs nin as a process of its own, directly or
    through a helper or a fixture of its module."""
    functions = {n.name: n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)}
    called = {
        name: {c.func.id for c in ast.walk(f) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)} for name, f in functions.items()
    }
    runners = set(PROCESS_RUNNERS)
    while True:  # the module's helpers and fixtures that run nin, to a fixed point
        more = {name for name, f in functions.items() if called[name] & runners or {a.arg for a in f.args.args} & runners} - runners
        if not more:
            break
        runners |= more
    return {name: name in runners for name in functions if name.startswith("test_")}


def out_of_test_fast(marks: list[ast.expr]) -> bool:
    return any(mark in ast.unparse(m) for m in marks for mark in OUT_OF_TEST_FAST)


def modules_of_tests() -> list[Path]:
    return sorted(Path(__file__).resolve().parent.rglob("test_*.py"))


def test_a_test_that_runs_nin_as_a_process_is_marked_e2e():
    """`make test-fast` leaves the e2e tests out: a test that forks or starts nin must say so, or the
    quick loop starts a preloaded server for it (seconds on 2 cores)."""
    unmarked = []
    for path in modules_of_tests():
        tree = ast.parse(path.read_text())
        module_marks = [
            n.value for n in tree.body if isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
        ]
        functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        for name, runs in process_tests(path.read_text()).items():
            if runs and not out_of_test_fast(module_marks + functions[name].decorator_list):
                unmarked.append(f"{path.parent.name}/{path.name}::{name}")
    assert unmarked == []


def test_the_process_rule_follows_helpers_and_fixtures():
    source = """
def helper(path):
    return nin("summarize", path)

@pytest.fixture
def swept(tmp_path):
    return helper(tmp_path)

def test_direct(tmp_path):
    nin("train")

def test_through_a_fixture(swept):
    pass

def test_in_process(capsys):
    nin_in_process(capsys, "train")
"""
    assert process_tests(source) == {"test_direct": True, "test_through_a_fixture": True, "test_in_process": False}


def test_no_test_module_imports_another():
    """What tests share lives in tests/harness.py: a test module found through another's folder is
    importable only when pytest happened to collect that folder first (`pytest tests/train/test_cuda.py`,
    make test-gpu's first step, could not import test_cnin)."""
    imports = {
        f"{path.parent.name}/{path.name}": node.module
        for path in modules_of_tests()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[-1].startswith("test_")
    }
    assert imports == {}
