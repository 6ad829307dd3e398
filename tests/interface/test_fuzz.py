"""Every input answered: commands drawn from the schema itself (Hypothesis), each either accepted or
refused in one `nin: error:` line, never a traceback.

A researcher's own config directory is drawn too (model configs with and without `name`, factories that
fail, .npz data of odd shapes, dtypes and label ranges) through the pre-flights of train, predict and map.

The draws: every config key of the schema with a value of its type, of another type, out of its
range or at its boundaries (0, negative, nan, inf, huge, empty list), misspelt keys and group
options, options that do not exist, sweep syntax (a,b, range(), glob(), interval()), Hydra's
launcher and sweeper keys, `+`, `~` and `++` prefixes, with `-m` or without. Most draws run the
pre-flight in-process (`check_command`: what `nin train` runs before anything trains); a fixed
sample runs the real `nin train` as a process of its own and checks its exit code, its one line,
that a refused command wrote nothing and that no run is left `running`.

`make fuzz` runs many more draws (HYPOTHESIS_PROFILE=fuzz). A failure the fuzzer found is kept as a
case of `test_found_failures_stay_answered`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from harness import nin
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nin_cli.analysis.predict import predict_setting
from nin_cli.config.preflight import check_command
from nin_cli.config.schema import SETTINGS, conf_dir, file_schema, load_settings, train_schema
from nin_cli.config.sources import from_entries
from nin_cli.errors import ConfigError, RecordError

# The suite's draws are the same on every checkout and in CI (derandomize); `make fuzz` draws anew each time.
settings.register_profile("default", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
settings.register_profile("fuzz", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

SCHEMA = train_schema(conf_dir())
KEYS = sorted(k for k in SCHEMA.types if not k.startswith("robustness.corruptions."))
GROUPS = {g: from_entries([]).options(g) for g in ("model", "dataset", "noise", "schedule", "nin", "optimizer", "loss", "method")}
LAUNCHERS = ["basic", "batched", "parallel", "local", "batched_local", "slurm", "batched_slurm"]
FUZZ_RUN = ["dataset=fashion_mnist_mini", "dataset.train_size=256", "dataset.test_size=100", "model.width=16", "epochs=1",
        "hessian.samples=32", "eval.train_samples=256", "progress=false"]  # fmt: skip

odd_numbers = st.sampled_from(["0", "-1", "-0.5", "nan", "inf", "-inf", "1e308", "99999999999999999999", "1e-320", "0.0"])
odd_values = st.one_of(
    odd_numbers,
    st.sampled_from(["[]", "[1,2]", "{}", "{a: 1}", "abc", "''", "null", "true", "???", "${nope}", "[a,[b]]"]),
    st.text(alphabet="abcxyz019.-_ ", min_size=1, max_size=8).map(lambda t: t.strip() or "x").filter(lambda t: "=" not in t),
)


def misspelt(word: str) -> st.SearchStrategy[str]:
    """A letter dropped, doubled or swapped."""
    i = st.integers(0, max(len(word) - 2, 0))
    return st.one_of(
        i.map(lambda k: word[:k] + word[k + 1 :]),
        i.map(lambda k: word[:k] + word[k] + word[k:]),
        i.map(lambda k: word[:k] + word[k + 1 : k + 2] + word[k : k + 1] + word[k + 2 :]),
    ).filter(lambda w: w and w != word)


def key_value() -> st.SearchStrategy[str]:
    key = st.sampled_from(KEYS)
    return st.one_of(
        st.tuples(key, odd_values).map(lambda kv: f"{kv[0]}={kv[1]}"),
        key.flatmap(lambda k: misspelt(k).map(lambda m: f"{m}=1")),
        st.tuples(key, st.sampled_from(["1,2", "range(1,3)", "interval(0,1)", "0.5,abc"])).map(lambda kv: f"{kv[0]}={kv[1]}"),
        st.tuples(st.sampled_from(["+", "~", "++"]), key, odd_values).map(lambda t: f"{t[0]}{t[1]}={t[2]}" if t[0] != "~" else f"~{t[1]}"),
    )


def group_choice() -> st.SearchStrategy[str]:
    group = st.sampled_from(sorted(GROUPS))
    real = group.flatmap(lambda g: st.sampled_from(GROUPS[g]).map(lambda o: f"{g}={o}"))
    typo = group.flatmap(lambda g: st.sampled_from(GROUPS[g]).flatmap(misspelt).map(lambda o: f"{g}={o}"))
    swept = group.flatmap(lambda g: st.sampled_from([f"{g}=glob(*)", f"{g}={GROUPS[g][0]},{GROUPS[g][-1]}", f"{g}=glob(x*)"]))
    experiment = st.sampled_from(["+experiment=fig3", "+experiment=fig2", "+experiment=linear_toy", "+experiment=nope", "experiment=fig3"])
    return st.one_of(real, typo, swept, experiment)


def hydra_setting() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(LAUNCHERS).map(lambda o: f"hydra/launcher={o}"),
        st.sampled_from(LAUNCHERS).flatmap(misspelt).map(lambda o: f"hydra/launcher={o}"),
        st.tuples(st.sampled_from(["batch_size", "n_jobs", "timeout_min", "array_parallelism", "nope"]), odd_values).map(
            lambda kv: f"hydra.launcher.{kv[0]}={kv[1]}"
        ),
        st.tuples(st.sampled_from(["lo", "hi", "tolerance", "budget", "axis", "seeds"]), odd_values).map(
            lambda kv: f"hydra.sweeper.{kv[0]}={kv[1]}"
        ),
        st.sampled_from(
            ["hydra.run.dir=/dev/null/x", "hydra.sweep.dir=", "hydra.searchpath=[file:///nonexistent]", "hydra.searchpath=abc"]
        ),
    )


commands = st.tuples(st.booleans(), st.lists(st.one_of(key_value(), group_choice(), hydra_setting()), min_size=1, max_size=4))


def answered(overrides: list[str], multirun: bool) -> str | None:
    """The pre-flight's answer: None (accepted) or its one line; anything else fails the test."""
    try:
        check_command(overrides, multirun=multirun)
    except (ConfigError, RecordError) as exc:
        message = str(exc)
        assert message and "\n" not in message and "Traceback" not in message, message
        return message
    return None


@given(commands)
def test_every_drawn_command_is_accepted_or_refused_in_one_line(command):
    multirun, overrides = command
    answered(overrides, multirun)


@pytest.mark.e2e
def test_a_fixed_sample_of_drawn_commands_as_real_processes(tmp_path):
    """The real `nin train`: exit 0, 1 or 2, at most one `nin: error:` line, no traceback, nothing
    written where the command was refused, no run left `running`."""
    for i, (multirun, overrides) in enumerate(FIXED_SAMPLE):
        out = tmp_path / f"c{i}"
        where = [f"hydra.sweep.dir={out}"] if multirun else [f"hydra.run.dir={out}"]
        args = ["train", *(["-m"] if multirun else []), *FUZZ_RUN, *overrides, *where]
        proc = nin(*args, cwd=tmp_path, timeout=300)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("nin: error:")]
        assert proc.returncode in (0, 1, 2), (args, proc.returncode, proc.stderr[-2000:])
        assert len(errors) <= 1 and "Traceback" not in proc.stderr, (args, proc.stderr[-2000:])
        if proc.returncode == 2:
            assert not out.exists(), (args, proc.stderr)
        for status in out.rglob("status.json") if out.exists() else []:
            assert json.loads(status.read_text())["status"] != "running", (args, status)


# a fixed sample of the draws above: refused ones of every kind, and some that train a run
FIXED_SAMPLE = [
    (False, ["noise.sigma=nan"]),
    (False, ["noise=gaussiann"]),
    (True, ["hydra/launcher=batched", "hydra.launcher.ensemble_size=0", "noise.sigma=1,2"]),
    (False, ["hydra/launcher=batched", "hydra.launcher.ensemble_size=4"]),
    (False, ["noise.sigma=1,10"]),
    (True, ["optimizer=adam", "noise.sigma=1,2"]),
    (False, ["+epochs=3"]),
    (False, ["~seed"]),
    (False, ["schedule=step", "noise.schedule.step_size=0"]),
    (True, ["hydra/launcher=batchd"]),
    (False, ["hydra.run.dir=/dev/null/x"]),
    (False, ["loss=mse", "loss.reduction=sum", "loss.outputs=softmax"]),
]


@pytest.mark.parametrize(
    "multirun, overrides, message",
    [
        (True, ["hydra/launcher=batched", "hydra.launcher.ensemble_size=0", "noise.sigma=1,2"], "must be an integer >= 1, got 0"),
        (False, ["hydra/launcher=batched", "hydra.launcher.ensemble_size=4"], "add -m"),
        (False, ["noise.sigma=1,10"], "is a sweep: add -m"),
        (True, ["hydra/launcher=batchd"], "did you mean batched?"),
        (False, ["hydra.run.dir=/dev/null/x"], "/dev/null is a file, not a directory"),
        (True, ["hydra/sweeper=map", "hydra.sweeper.lo=abc"], "could not be converted to Float"),
    ],
)
def test_found_failures_stay_answered(multirun, overrides, message):
    assert message in (answered(overrides, multirun) or "")


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_nan_and_inf_are_refused_for_every_number(bad):
    numbers = [k for k in KEYS if SCHEMA.types[k] & {int, float} and not SCHEMA.types[k] & {str}]
    accepted = [f"{key}={bad}" for key in numbers if answered([f"{key}={bad}"], multirun=False) is None]
    assert len(numbers) > 40 and accepted == []


@pytest.mark.parametrize("directory", ["outputs"])
def test_the_pre_flight_writes_nothing(tmp_path, directory, monkeypatch):
    monkeypatch.chdir(tmp_path)
    answered(["noise.sigma=1", "model=cnn"], multirun=False)
    answered(["model=nope"], multirun=True)
    assert not (Path(tmp_path) / directory).exists()


# --- damaged records ---------------------------------------------------------------------------------
RECORDS = ["metrics.csv", "steps.csv", "config.yaml", "status.json", "checkpoint.pt", "robustness.partial.json", "../sweep.json"]
DAMAGES = ["truncated", "flipped", "emptied", "foreign", "header"]


@pytest.fixture(scope="module")
def trained_sweep(tmp_path_factory) -> Path:
    """A sweep of one finished run with every record a run can have (robustness.partial.json too)."""
    sweep = tmp_path_factory.mktemp("damaged") / "sweep"
    proc = nin("train", "-m", *FUZZ_RUN, "epochs=2", "noise.sigma=3", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr
    run = next(p.parent for p in sweep.glob("*/metrics.csv"))
    (run / "robustness.partial.json").write_text(json.dumps({"settings": "0123456789abcdef", "rows": []}) + "\n")
    return sweep


def damage(path: Path, how: str, where: float) -> None:
    data = path.read_bytes()
    cut = int(len(data) * where)
    if how == "truncated":
        path.write_bytes(data[:cut])
    elif how == "flipped":
        i = min(cut, len(data) - 1)
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :])
    elif how == "emptied":
        path.write_bytes(b"")
    elif how == "header":  # a byte of the first line flipped: for a CSV, a column's name
        end = max(data.find(b"\n"), 1)
        i = int(end * where)
        path.write_bytes(data[:i] + bytes([data[i] ^ 0x20]) + data[i + 1 :])
    else:  # another kind of file where this one should be
        path.write_bytes(
            {".csv": b'{"a": [1, 2]}\n', ".json": b"epoch,step\n1,2\n", ".yaml": b"- 1\n- [2\n", ".pt": b"not a checkpoint\n"}[path.suffix]
        )


def snapshot(root: Path) -> dict[str, bytes]:
    names = ("metrics.csv", "steps.csv", "config.yaml", "status.json", "checkpoint.pt", "robustness.partial.json", "sweep.json")
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.name in names}


def one_answer(proc, allowed=(0, 1, 2)) -> None:
    assert proc.returncode in allowed, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert sum(line.startswith("nin: error:") for line in proc.stderr.splitlines()) <= 1, proc.stderr[-2000:]


@pytest.mark.e2e
@settings(max_examples=int(os.environ.get("NIN_FUZZ_RECORDS", "6")), deadline=None, suppress_health_check=list(HealthCheck))
@given(record=st.sampled_from(RECORDS), how=st.sampled_from(DAMAGES), where=st.floats(0.05, 0.95))
def test_a_damaged_record_is_one_line_or_a_warning_and_reading_changes_nothing(trained_sweep, tmp_path_factory, record, how, where):
    answers_damage(trained_sweep, tmp_path_factory.mktemp("copy"), record, how, where)


@pytest.mark.e2e
@pytest.mark.parametrize(
    "record, how, where",
    [
        ("config.yaml", "truncated", 0.25),  # found: nin evaluate failed with omegaconf's traceback (keys missing)
        ("steps.csv", "header", 0.45),  # found: summarize failed with pandas' KeyError (the train_loss column renamed)
    ],
)
def test_found_damaged_records_stay_answered(trained_sweep, tmp_path, record, how, where):
    answers_damage(trained_sweep, tmp_path, record, how, where)


def answers_damage(trained_sweep: Path, tmp: Path, record: str, how: str, where: float) -> None:
    import shutil

    sweep = tmp / "sweep"
    shutil.copytree(trained_sweep, sweep)
    run = next(p.parent for p in sweep.glob("*/config.yaml"))
    damage((run / record).resolve(), how, where)
    damaged = (run / record).resolve().read_bytes()
    before = snapshot(sweep)
    answers = []
    for args in (["summarize", str(sweep)], ["report", str(sweep)], ["progress", str(sweep)], ["plot", str(sweep), "--no-runs"]):
        answers.append(nin(*args))
        one_answer(answers[-1])
    assert snapshot(sweep) == before  # reading a record never changes it
    answers.append(nin("evaluate", str(run), "test_size=50", "gaussian=[]", "attacks=[]", "corruptions=null", "--no-progress"))
    one_answer(answers[-1])
    answers.append(nin("train", "-m", *FUZZ_RUN, "epochs=3", "extend=true", "noise.sigma=3", f"hydra.sweep.dir={sweep}"))
    one_answer(answers[-1])
    # the damage is reported: a warning or an error names the file, unless it left a whole record
    # (a CSV cut at a line's end that status.json does not contradict: a shorter record, not a damaged one)
    said = "".join(a.stdout + a.stderr for a in answers)
    whole = how == "truncated" and record == "steps.csv" and damaged.endswith(b"\n")
    assert Path(record).name in said or whole, said[-3000:]
    status = run / "status.json"
    if record != "status.json":
        assert json.loads(status.read_text()).get("status") != "running"


# --- the settings of the commands that read runs (nin summarize/report/plot/theory KEY=VALUE, nin evaluate KEY=VALUE)
SETTINGS_KEYS = {name: sorted(file_schema(conf_dir() / file, prefixes, rules).types) for name, (file, prefixes, rules) in SETTINGS.items()}
SETTINGS_EXTRA = {"analysis": [], "robustness": ["corruptions={blur: [1]}", "corruptions={rotate: [6]}", "attacks=[cw]", "attacks=[]"]}


def settings_override(name: str) -> st.SearchStrategy[str]:
    key = st.sampled_from(SETTINGS_KEYS[name])
    return st.one_of(
        st.tuples(key, odd_values).map(lambda kv: f"{kv[0]}={kv[1]}"),
        key.flatmap(misspelt).map(lambda k: f"{k}=1"),
        st.tuples(key, st.sampled_from(["0.5", "2", "10", "1e-3", "[0.1]"])).map(lambda kv: f"{kv[0]}={kv[1]}"),
        st.sampled_from(SETTINGS_EXTRA[name] or ["nope=1"]),
    )


@pytest.fixture(scope="module")
def trained_analysis(tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny finished runs (in-process), and where the summaries go."""
    from harness import make_cfg

    from nin_cli.train import train

    sweep = tmp_path_factory.mktemp("analysis")
    for sigma in (0.5, 3):
        train(make_cfg(*FUZZ_RUN, "epochs=2", f"noise.sigma={sigma}"), sweep / f"sigma={sigma}")
    return sweep, tmp_path_factory.mktemp("out")


@given(st.data())
def test_every_drawn_setting_of_the_analysis_and_evaluate_commands_is_answered(trained_analysis, data):
    """Accepted settings then summarize the sweep (nin summarize in-process) without a traceback;
    refused ones are one line."""
    from nin_cli.analysis.summarize import summarize_paths
    from nin_cli.data.perturbations import plan

    name = data.draw(st.sampled_from(sorted(SETTINGS)))
    overrides = data.draw(st.lists(settings_override(name), min_size=1, max_size=3))
    sweep, out = trained_analysis
    try:
        cfg = load_settings(name, overrides)
        if name == "robustness":
            plan(cfg)
        else:
            summarize_paths([str(sweep)], overrides, out)
    except (ConfigError, RecordError) as exc:
        assert str(exc) and "\n" not in str(exc), str(exc)


@pytest.mark.parametrize(
    "name, override",
    [  # found by the draws above: each ended in a traceback (omegaconf's, numpy's or Python's)
        ("analysis", "fits.min_drop={}"),
        ("robustness", "corruptions.brightness=${nope}"),
        ("robustness", "corruptions.brightness=???"),
        ("robustness", "corruptions.brightness=nan"),
        ("robustness", "corruptions={a: 1}"),
        ("robustness", "corruptions.brightness={}"),
        ("robustness", "epsilons=[a,[b]]"),
        ("robustness", "corruptions.brightness=[.nan]"),  # found on review: int(nan) in the severity check
    ],
)
def test_found_settings_failures_stay_answered(name, override):
    from nin_cli.data.perturbations import plan

    with pytest.raises(ConfigError) as caught:
        cfg = load_settings(name, [override])
        plan(cfg) if name == "robustness" else None
    assert "\n" not in str(caught.value)


@pytest.mark.e2e
def test_settings_of_every_reading_command_as_real_processes(trained_sweep):
    """The commands that read runs take the drawn settings as users type them: one answer each."""
    before = snapshot(trained_sweep)
    for args in (
        ["summarize", "fits.min_drop={}"],
        ["report", "nope=1"],
        ["plot", "--no-runs", "phases.decay_niw_ratio=abc"],
        ["theory", "fits.min_points=-1"],
        ["evaluate", "epsilons=[a,[b]]"],
        ["summarize", "fits.min_points=0", "phases.chance_acc=2"],
    ):
        proc = nin(args[0], str(trained_sweep), *args[1:])
        one_answer(proc)
    assert snapshot(trained_sweep) == before


# --- a researcher's own config directory, drawn --------------------------------------------------
FACTORIES = {
    "mlp": "_target_: nin_examples.networks.mlp\ndepth: {depth}\nwidth: {width}\n",
    "cnn": "_target_: nin_examples.networks.cnn\nhidden: {width}\n",
    "bn_mlp": "_target_: nin_examples.networks.bn_mlp\nwidth: {width}\n",
    "missing": "_target_: not_a_package.nets.Net\n",  # does not import
    "bad_argument": "_target_: nin_examples.networks.mlp\nwidht: {width}\n",  # an argument the factory does not take
    "shipped": "name: mlp\nwidth: {width}\n",  # nin's own architecture, keys left out
    "shipped_typo": "name: mlp\nwidht: {width}\n",
}


@st.composite
def user_config_dirs(draw) -> tuple[dict[str, str], dict, list[str]]:
    """(model config's text, the .npz's arrays, the command's overrides): a model config with or
    without `name:`, a factory that builds, fails or does not import, or nin's own architecture with
    keys left out or misspelt; data of odd shapes, dtypes and label ranges; NINs at drawn modules."""
    kind = draw(st.sampled_from(sorted(FACTORIES)))
    text = FACTORIES[kind].format(depth=draw(st.sampled_from([-1, 0, 1, 2])), width=draw(st.sampled_from([0, 3, 8])))
    if draw(st.booleans()):
        text = f"name: mine\n{text}" if not text.startswith("name:") else text
    n, rng = 40, np.random.default_rng(draw(st.integers(0, 3)))
    shape = draw(st.sampled_from([(n, 6), (n, 28, 28), (n, 1, 28, 28), (n,), (n, 2, 3, 4, 5)]))
    dtype = draw(st.sampled_from(["float32", "uint8", "int64", "float64"]))
    x = (rng.random(shape) * (255 if dtype == "uint8" else draw(st.sampled_from([1.0, 3.0])))).astype(dtype)
    if draw(st.booleans()):
        x.flat[0] = np.nan if x.dtype.kind == "f" else x.flat[0]
    labels = draw(st.sampled_from(["classes", "from_one", "negative", "one_hot", "targets", "one_class"]))
    k = draw(st.sampled_from([2, 3, 10]))
    y = rng.integers(0, k, n)
    y = {
        "classes": y,
        "from_one": y + 1,
        "negative": y - 1,
        "one_hot": np.eye(k, dtype=np.float32)[y],
        "targets": rng.normal(size=n).astype(np.float32),
        "one_class": np.zeros(n, dtype=np.int64),
    }[labels]
    arrays = {"x_train": x, "y_train": y, "x_test": x[: n // 2], "y_test": y[: n // 2]}
    overrides = ["model=mine", "dataset=mine", "device=cpu", "epochs=1", "progress=false"]
    overrides += draw(
        st.sampled_from([[], ["loss=mse"], ["nin=all"], ["nin=layers", "nin.layers=[1]"], ["nin=layers", "nin.layers=[fc9]"]])
    )
    return {"model": text}, arrays, overrides


@settings(max_examples=int(os.environ.get("NIN_FUZZ_CONFIGS", "20")), deadline=None, suppress_health_check=list(HealthCheck))
@given(user_config_dirs())
def test_every_drawn_config_directory_of_ones_own_is_accepted_or_refused_in_one_line(drawn):
    """The pre-flight of `nin train --config-dir DIR` over a drawn directory (model config, .npz
    data): accepted, or refused in one line of nin's own; an exception of anything else (omegaconf,
    pandas, torch, numpy) is never an answer."""
    import tempfile

    texts, arrays, overrides = drawn
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "model").mkdir()
        (root / "dataset").mkdir()
        (root / "model" / "mine.yaml").write_text(texts["model"])
        np.savez(root / "data.npz", **arrays)
        (root / "dataset" / "mine.yaml").write_text(f"defaults:\n  - arrays\npath: {root / 'data.npz'}\n")
        if nins_answer(lambda: check_command(overrides, multirun=False, config_dirs=[str(root)])):
            return  # refused: the map's and predict's pre-flights refuse it the same way
        # accepted: predict's pre-flight and prediction, and a map's pre-flight, answer it too
        nins_answer(lambda: predict_setting(overrides, 8, "1,10", None, root / "predict", [str(root)]))
        map_args = [*overrides, "hydra/sweeper=map", "hydra.sweeper.lo=0.01", "hydra.sweeper.hi=1"]
        nins_answer(lambda: check_command(map_args, multirun=True, config_dirs=[str(root)]))


def nins_answer(call) -> bool:
    """Run a command's step: True where it refused in one line of nin's own, False where it went
    through; anything else (another exception, omegaconf's or torch's words) fails the test."""
    try:
        call()
    except (ConfigError, RecordError) as exc:
        message = str(exc)
        assert message and "\n" not in message and "Traceback" not in message, message
        for foreign in ("omegaconf", "pandas", "numpy", "torch.", "Key '", "not in struct"):
            assert foreign not in message, message
        return True
    return False
