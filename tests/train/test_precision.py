"""The host side of the CUDA path, on the CPU: CUDA's float32 precision set and read through one API,
the engine record of a GPU run, the step and graph decisions for CUDA, and runs moving between a
GPU and a CPU on resume. tests/train/test_cuda.py runs the same paths on a GPU."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from harness import EXAMPLES, TINY, make_cfg, nin, read_rows

from nin_cli.config.resolve import resolve
from nin_cli.records.store import RunRecords
from nin_cli.train import Member, train
from nin_cli.train.engine import check_engine_change, engine_record, recorded_arithmetic
from nin_cli.train.graphs import GraphedStep, graphed_on_cuda
from nin_cli.train.precision import arithmetic, configure, set_tf32, tf32_flags
from nin_cli.train.setup import prepare
from nin_cli.train.steps import LoopStep, choose_step


@pytest.mark.parametrize("enabled", [True, False])
def test_tf32_is_read_back_as_it_was_set(restored_precision, enabled):
    set_tf32(enabled)
    assert tf32_flags() == {"matmul": enabled, "conv": enabled}


def test_the_engine_record_of_a_tf32_gpu_run_reads_the_flags_it_set(restored_precision):
    """What failed every GPU run before its first epoch (torch >= 2.9): the precision set with the
    new API, then the engine record reading the legacy flag. A GPU's record, built on the CPU."""
    s = prepare(make_cfg(*TINY, "precision=tf32"))
    gpu = dataclasses.replace(s, device=torch.device("cuda"))
    configure(gpu.device, "tf32")
    record = engine_record(gpu)
    assert record["tf32"] == {"matmul": True, "conv": True} and record["arithmetic"] == "tf32" and record["device"] == "cuda"
    configure(gpu.device, "fp32")
    assert engine_record(gpu)["tf32"] == {"matmul": False, "conv": False}


def test_the_arithmetic_a_precision_gives_on_each_device():
    assert [arithmetic("cpu", p) for p in ("fp32", "tf32", "bf16")] == ["fp32", "fp32", "bf16"]
    assert [arithmetic("cuda", p) for p in ("fp32", "tf32", "bf16")] == ["fp32", "tf32", "bf16"]
    # an engine record written before the entry existed: told from its precision and device
    assert recorded_arithmetic({"precision": "tf32", "device": "cuda:0"}) == "tf32"
    assert recorded_arithmetic({"precision": "tf32", "device": "cpu"}) == "fp32"
    assert recorded_arithmetic({"threads": 2}) is None


def test_the_default_precision_is_ieee_float32():
    """The NIW's gradient is what nin measures: TF32 moves it (docs/speed.md), so it is an opt-in."""
    assert make_cfg().precision == "fp32"


def test_graphs_are_a_cuda_matter_and_the_loop_step_is_graphed_only_where_it_replays_exactly(tmp_path):
    def step(x, y, eps):
        return x

    assert graphed_on_cuda(step, make_cfg(), torch.device("cpu")) is step
    assert isinstance(graphed_on_cuda(step, make_cfg(), torch.device("cuda")), GraphedStep)
    assert graphed_on_cuda(step, make_cfg("cuda_graphs=false"), torch.device("cuda")) is step
    for overrides, graphable in (([], True), (["optimizer.momentum=0.9"], True), (["optimizer=adam"], False), (["method=dropout"], False)):
        member = Member(prepare(make_cfg(*TINY, *overrides)), RunRecords(tmp_path / "_".join(overrides or ["plain"])))
        assert LoopStep([member]).graphable is graphable, overrides


def test_on_cuda_a_single_run_of_a_plain_mlp_factory_takes_the_fused_step():
    """The generic path's single run on a GPU: the shipped MLP's fused step (captured as a graph),
    chosen by the network's structure, not by its name."""
    cfg = make_cfg(EXAMPLES, *TINY, "model=my_mlp")
    kind = prepare(cfg).model.kind
    assert kind.fused and choose_step(cfg, 1, torch.device("cuda"), kind).kind == "fused"
    cnn = make_cfg(EXAMPLES, *(o for o in TINY if not o.startswith("model.")), "model=my_cnn")
    assert choose_step(cnn, 1, torch.device("cuda"), prepare(cnn).model.kind).kind == "loop"


def as_if_trained_on_cuda(run, precision: str) -> None:
    """Make a CPU run's records what a GPU would have written: CUDA generator states (16 bytes,
    which a CPU generator refuses) and a CUDA engine record."""
    records = RunRecords(run)
    state = records.load_checkpoint()
    cuda_state = torch.zeros(16, dtype=torch.uint8)
    state.update(data_gen=cuda_state, input_gen=cuda_state, cuda_rng=[cuda_state], device="cuda")
    state["noise"]["gen"] = cuda_state
    records.save_checkpoint(state)
    env = records.read_env()
    env["engine"].update(device="cuda:0", precision=precision, arithmetic=arithmetic("cuda", precision))
    (run / "env.json").write_text(json.dumps(env))


@pytest.mark.e2e
def test_a_run_trained_on_a_gpu_resumes_on_a_cpu_with_its_streams_reseeded(tmp_path):
    run = tmp_path / "run"
    args = [*TINY, "epochs=2", "precision=fp32", f"hydra.run.dir={run}"]
    assert nin("train", *args).returncode == 0
    as_if_trained_on_cuda(run, "fp32")
    extended = nin("train", *args[:-2], "epochs=4", "extend=true", f"hydra.run.dir={run}")
    assert extended.returncode == 0, extended.stderr
    said = " ".join(extended.stderr.split())  # the console's line, unwrapped
    assert "device cuda:0 -> cpu" in said and "re-seeded" in said
    assert [int(r["epoch"]) for r in read_rows(run)] == [0, 1, 2, 3, 4]
    assert "from a checkpoint written on cuda" in (run / "train.log").read_text()
    assert json.loads((run / "env.json").read_text())["engine"]["device"] == "cpu"
    # a second resume on the CPU after that continues the CPU's own streams, as any resume
    assert nin("train", *args[:-2], "epochs=5", "extend=true", f"hydra.run.dir={run}").returncode == 0


@pytest.mark.e2e
def test_a_run_trained_in_tf32_is_not_resumed_in_float32_unless_allowed(tmp_path):
    run = tmp_path / "run"
    args = [*TINY, "epochs=2", f"hydra.run.dir={run}"]
    assert nin("train", *args).returncode == 0
    as_if_trained_on_cuda(run, "tf32")
    refused = nin("train", *args[:-2], "epochs=3", "extend=true", f"hydra.run.dir={run}")
    lines = [line for line in refused.stderr.splitlines() if line.startswith("nin: error:")]
    assert refused.returncode != 0 and len(lines) == 1 and "Traceback" not in refused.stderr
    assert "trained in tf32 on cuda:0, resumes in fp32 on cpu" in lines[0] and "engine_change=allow" in lines[0]
    assert "precision=tf32 on a GPU" in lines[0]
    allowed = nin("train", *args[:-2], "epochs=3", "extend=true", "engine_change=allow", f"hydra.run.dir={run}")
    assert allowed.returncode == 0 and len(read_rows(run)) == 4, allowed.stderr
    assert "engine_change=allow" in (run / "train.log").read_text()


def test_precision_is_compared_by_the_arithmetic_it_gives_not_by_its_name(tmp_path):
    """On a CPU precision=tf32 computes in float32: a run trained under the former default resumes
    under today's without a word, and its config then says what ran."""
    run = tmp_path / "run"
    train(make_cfg(*TINY, "epochs=1", "precision=tf32"), run)
    records = RunRecords(run)
    check_engine_change(records, engine_record(prepare(make_cfg(*TINY, "precision=fp32"))), allow=False)
    assert train(make_cfg(*TINY, "epochs=2", "extend=true", "precision=fp32"), run).status == "completed"
    assert resolve(make_cfg(*TINY)).cfg.precision == "fp32" and "precision: fp32" in (run / "config.yaml").read_text()
    with pytest.raises(Exception, match="trained in fp32 on cpu, resumes in bf16 on cpu"):
        check_engine_change(records, engine_record(prepare(make_cfg(*TINY, "precision=bf16"))), allow=False)


def test_the_epoch_measurement_is_replayed_as_a_graph_only_on_cuda():
    from nin_cli.train.graphs import GraphedMeasurement, graphed_measurement
    from nin_cli.train.rows import measured_on

    s = prepare(make_cfg(*TINY))
    assert not isinstance(measured_on(s), GraphedMeasurement)  # the CPU measures eagerly, as before

    def fn(probes):
        return {}

    assert isinstance(graphed_measurement(fn, make_cfg(), torch.device("cuda")), GraphedMeasurement)
    assert graphed_measurement(fn, make_cfg("cuda_graphs=false"), torch.device("cuda")) is fn
