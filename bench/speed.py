"""Time per model-epoch: a plain PyTorch loop with a torchvision DataLoader, `nin train`'s engine,
and the batched ensemble engine at several K, side by side in one process on the same data.

    python bench/speed.py                          # every setting (Fig. 1, Fig. 3, CNN), CPU (and CUDA if present)
    python bench/speed.py --device cuda --ks 8 64  # on a GPU
    python bench/speed.py --train-size 20000       # a slice of the training set, for a quick look
    python bench/speed.py --precision bf16         # nin in precision=bf16, next to the loop with and without autocast

Beside the shipped Fig. 3 MLP and CNN, (g) trains the same networks written as a researcher's
nn.Sequential factories (examples/nin_examples, `pip install -e examples`): nin's generic path.

The methods are timed in turn, one epoch each (a, b, c, a, b, c, ...; --repeats rounds), and each
reports its median, so load from elsewhere on the machine falls on all of them alike. (b) is shown
as its training step and with the per-epoch measurement (clean train and test metrics, Tr H_z, the
NIW curvature), whose cost is the `measurement` column, relative to the step: at today's defaults
and, on the same model in the same epochs, at the former ones (every training image for the clean
metrics, the Hessian on 1000 samples with 4 probes).

Ratios are baseline time / method time: above 1 means faster than the plain loop (a), which runs in
float32 (TF32 on CUDA unless --precision fp32). With --precision bf16 the loop also runs under bf16
autocast, as (a'), so the gain from the engine and the gain from the number format can be told apart.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn

from nin_cli.config.legacy import FORMER_DEFAULTS
from nin_cli.config.schema import conf_dir
from nin_cli.data.datasets import load_dataset
from nin_cli.nets.optimizers import PRECISIONS
from nin_cli.records.store import RunRecords
from nin_cli.train import Member
from nin_cli.train.loop import Ensemble
from nin_cli.train.precision import set_tf32
from nin_cli.train.rows import epoch_row
from nin_cli.train.setup import prepare
from nin_cli.train.steps import choose_step

SETTINGS = {
    "fig1": ["+experiment=fig1", "target_train_acc=null"],  # 3 x 1024, CE, batch 128, lr 0.05
    "fig3": ["+experiment=fig3"],  # 1 x 1024, CE, batch 1000, lr 0.01
    "cnn": ["+experiment=ninr_comparison", "model=cnn"],  # the NINR study's CNN, batch 128, lr 0.05
}


# A researcher's factories (examples/nin_examples/networks.py) of the same networks, with the papers' init:
# the same NIN mechanism (nin_cli/nets/nin.py) as nin's own, and the same accelerators where the structure is the same.
GENERIC = {
    "fig3": {"name": "my_mlp", "_target_": "nin_examples.networks.mlp", "init": "fan_in"},
    "cnn": {"name": "my_cnn", "_target_": "nin_examples.networks.cnn", "init": "fan_in"},
}


def generic_cfg(cfg, setting: str):
    """The setting with its network as a factory's (same architecture, same weights and noise)."""
    out = cfg.copy()
    arch = {k: cfg.model[k] for k in ("depth", "width", "channels", "hidden") if k in cfg.model}
    OmegaConf.set_struct(out, False)
    out.model = {**GENERIC[setting], **arch}
    return out


def setting_overrides(setting: str, device: str) -> list[str]:
    """What the bench trains for a setting on a device: the setting's experiment at sigma 1
    (bench/step_profile.py profiles the same)."""
    return [*SETTINGS[setting], f"device={device}", "progress=false", "noise.sigma=1"]


IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def torchvision_root() -> Path:
    """A torchvision FashionMNIST root built from the Debian IDX files (torchvision wants them unzipped)."""
    src = Path("/usr/share/datasets/fashion-mnist")
    root = Path(tempfile.mkdtemp(prefix="nin-bench-"))
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in IDX_FILES:
        if (src / f"{name}.gz").exists():
            with gzip.open(src / f"{name}.gz") as f, open(raw / name, "wb") as out:
                shutil.copyfileobj(f, out)
        else:
            sys.exit(f"bench needs Fashion-MNIST: {src / name}.gz is missing (make data)")
    return root


def baseline(cfg, root: Path, device: torch.device, train_size: int | None, bf16: bool = False) -> Callable[[], float]:
    """The loop a researcher writes first: torchvision dataset, transforms, DataLoader, nn.Sequential;
    with `bf16`, its forward under torch.autocast (the usual way to get bfloat16 matmuls). One call: one epoch, its seconds."""
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.2860,), (0.3530,))])
    ds = datasets.FashionMNIST(str(root), train=True, transform=tf, download=False)
    if train_size:
        ds = torch.utils.data.Subset(ds, range(train_size))
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, shuffle=True)
    model = baseline_model(cfg).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optimizer.lr)

    def epoch() -> float:
        sync(device)
        t0 = time.perf_counter()
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sync(device)
        return time.perf_counter() - t0

    return epoch


def baseline_model(cfg) -> nn.Module:
    """The same architecture as nin's model, as plain nn.Sequential (no NINs)."""
    if cfg.model.name == "cnn":
        c1, c2 = cfg.model.channels
        return nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(c2 * 49, cfg.model.hidden), nn.ReLU(), nn.Linear(cfg.model.hidden, 10),
        )  # fmt: skip
    dims = [784] + [cfg.model.width] * cfg.model.depth
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(dims[-1], 10))


def nin_ensemble(cfgs, data, tmp: Path, kind: str | None = None) -> Ensemble:
    return Ensemble([Member(prepare(cfg, data), RunRecords(tmp / f"m{i}")) for i, cfg in enumerate(cfgs)], kind)


def former_measurement(cfg):
    """The config measured as before 2026-11-29 (legacy.FORMER_DEFAULTS: clean train metrics on every
    training image, the Hessian on 1000 samples with 4 probes), the rest unchanged."""
    former = cfg.copy()
    for key, value in FORMER_DEFAULTS.items():
        OmegaConf.update(former, key, value)
    return former


def measured(setup, step: int = 0, lr: float = 0.0) -> tuple[dict, float]:
    """One epoch's metrics.csv row for the setup's model as it stands, and the seconds it took."""
    device = setup.data.train.x.device
    sync(device)
    t0 = time.perf_counter()
    row = epoch_row(setup, 1, step, 1.0, 0.0, 0.0, lr)
    sync(device)
    return row, time.perf_counter() - t0


def nin_single(cfg, data, tmp: Path) -> Callable[[], tuple[float, float, float]]:
    """One call: one epoch of a single run, (train-step seconds, seconds of the per-epoch measurement:
    clean train and test metrics, Tr H_z, NIW curvature; the same measured at the former defaults)."""
    single = nin_ensemble([cfg], data, tmp)
    single.train_epoch([1.0])  # warm-up, as for the batched engine
    member = single.members[0]
    former = replace(member.s, cfg=former_measurement(member.s.cfg), measurement=None)

    def measure(setup) -> float:
        return measured(setup, member.step, member.lr)[1]

    for setup in (member.s, member.s, former, former):  # on CUDA: the measurement's warm-up, then its capture
        measure(setup)

    def epoch() -> tuple[float, float, float]:
        sync(data.train.x.device)
        t0 = time.perf_counter()
        single.train_epoch([1.0])
        sync(data.train.x.device)
        return time.perf_counter() - t0, measure(member.s), measure(former)

    return epoch


def unfused(cfg):
    """The same config with the CNN's first block on PyTorch's kernels, not nin_cli/nets/conv_block.c's
    (fused_block=off): the fused block's gain, read in the same process."""
    off = cfg.copy()
    off.fused_block = "off"
    return off


def train_seconds(epoch: Callable) -> Callable[[], float]:
    """The train step's seconds of an epoch function that also returns measurement seconds."""

    def run() -> float:
        result = epoch()
        return result[0] if isinstance(result, tuple) else result

    return run


def nin_batched(cfg, data, tmp: Path, k: int, kind: str | None = None) -> Callable[[], float]:
    """One call: one epoch of a K-member ensemble, seconds per model."""
    cfgs = [cfg.copy() for _ in range(k)]
    for i, c in enumerate(cfgs):
        c.seed = i
    batch = nin_ensemble(cfgs, data, tmp, kind)
    batch.train_epoch([1.0] * k)  # warm-up: CUDA graph capture, cuBLAS autotuning, allocator

    def epoch() -> float:
        sync(data.train.x.device)
        t0 = time.perf_counter()
        batch.train_epoch([1.0] * k)
        sync(data.train.x.device)
        return (time.perf_counter() - t0) / k

    return epoch


def generic_kind(cfg):
    """What the steps can do with the factory's network (built once, on the CPU)."""
    from nin_cli.nets.network import build_model

    return build_model(cfg.model, cfg.nin, (1, 28, 28), 10, 0).kind


def interleaved(methods: dict[str, Callable[[], float | tuple[float, ...]]], repeats: int) -> dict[str, list]:
    """Each method's epochs, timed in turn (a, b, c, a, b, c, ...): load from elsewhere on the
    machine falls on all of them alike, and the medians compare."""
    times: dict[str, list] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, run in methods.items():
            times[name].append(run())
    return times


def arithmetic_floor(cfg, n_train: int, device: torch.device, dtype: torch.dtype) -> tuple[float, float]:
    """(seconds, GFLOP/s): an epoch's forward and backward GEMMs at the best rate this device runs
    the widest layer's product in `dtype`, alone or 8 stacked as in an ensemble."""
    dims = [784] + [cfg.model.width] * cfg.model.depth + [10]
    weights = [a * b for a, b in zip(dims[:-1], dims[1:])]
    flops = 2 * n_train * (2 * sum(weights) + sum(weights[1:]))  # forward, weight gradients, input gradients past layer 1
    rates = []
    for k in (1, 8):
        a = torch.randn(k, cfg.batch_size, cfg.model.width, device=device, dtype=dtype)
        w = torch.randn(k, cfg.model.width, cfg.model.width, device=device, dtype=dtype)
        for _ in range(3):
            torch.bmm(a, w)
        sync(device)
        t0, reps = time.perf_counter(), 20
        for _ in range(reps):
            torch.bmm(a, w)
        sync(device)
        rates.append(2 * a.numel() * cfg.model.width * reps / (time.perf_counter() - t0))
    return flops / max(rates), max(rates) / 1e9


def step_gemms(cfg, n_train: int, device: torch.device, dtype: torch.dtype, reps: int = 50) -> float:
    """Seconds per epoch of one run's step products alone, in the step's order and shapes (each
    layer's forward, the input gradients past layer 1, the in-place updates; nothing else): what
    the fused single-run step would take if all its other work cost nothing."""
    dims = [784] + [cfg.model.width] * cfg.model.depth + [10]
    ws = [torch.randn(1, b, a, device=device, dtype=dtype) * 0.01 for a, b in zip(dims[:-1], dims[1:])]
    bs = [torch.zeros(1, 1, b, device=device, dtype=dtype) for b in dims[1:]]
    x = torch.randn(1, cfg.batch_size, 784, device=device, dtype=dtype)
    dz0 = torch.randn(1, cfg.batch_size, 10, device=device, dtype=dtype) * 1e-3

    def step() -> None:
        hs = [x]
        for i, w in enumerate(ws):
            hs.append(torch.baddbmm(bs[i], hs[-1], w.transpose(1, 2)))
        dz = dz0
        for i in reversed(range(len(ws))):
            dh = torch.bmm(dz, ws[i]) if i > 0 else None
            ws[i].baddbmm_(dz.transpose(1, 2), hs[i], alpha=-1e-6)
            dz = dh

    for _ in range(5):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        step()
    sync(device)
    return (time.perf_counter() - t0) / reps * -(-n_train // cfg.batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=["all"], choices=["all", *SETTINGS], help="default: all")
    parser.add_argument("--device", nargs="+", default=["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    parser.add_argument("--ks", nargs="+", type=int, default=None, help="ensemble sizes (default: 8 on CPU, 8 64 on CUDA)")
    parser.add_argument("--train-size", type=int, default=None, help="use the first N training images")
    parser.add_argument("--repeats", type=int, default=3, help="epochs timed per method, interleaved across methods (median)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="precision= (tf32: TF32 on CUDA, fp32 on CPU)")
    parser.add_argument("--log-every", type=int, default=1, help="steps.csv every N steps, as log.every_steps (0: off)")
    parser.add_argument("--no-graphs", action="store_true", help="CUDA: the batched engine without CUDA graph replay")
    parser.add_argument("--no-generic", action="store_true", help="skip the (g) rows: the networks as factories (needs nin_examples)")
    args = parser.parse_args()
    root = torchvision_root()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, train size {args.train_size or 60000}", end="")
    print(f", precision={args.precision}", end="")
    print(", CUDA: " + ("eager steps" if args.no_graphs else "CUDA graphs") if torch.cuda.is_available() else "")
    header = f"{'setting':<6} {'device':<6} {'method':<36} {'s/model-epoch':>14} {'vs (a)':>8} {'measurement':>12}"
    print(header + "\n" + "-" * len(header))
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        for device_name in args.device:
            device = torch.device(device_name)
            ks = args.ks or ([8] if device.type == "cpu" else [8, 64])
            for setting in list(SETTINGS) if "all" in args.settings else args.settings:
                overrides = setting_overrides(setting, device_name)
                overrides += [f"precision={args.precision}", f"cuda_graphs={not args.no_graphs}", f"log.every_steps={args.log_every}"]
                if device.type == "cuda":
                    set_tf32(args.precision != "fp32")  # the baseline's float32 matmuls as nin's
                if args.train_size:
                    overrides.append(f"dataset.train_size={args.train_size}")
                cfg = compose("train", overrides=overrides)
                data = load_dataset(cfg.dataset, device)
                with tempfile.TemporaryDirectory() as tmp:
                    methods: dict[str, Callable] = {"(a) PyTorch + DataLoader": baseline(cfg, root, device, args.train_size)}
                    if args.precision == "bf16":
                        methods["(a') (a) under bf16 autocast"] = baseline(cfg, root, device, args.train_size, bf16=True)
                    methods["(b) nin train"] = nin_single(cfg, data, Path(tmp))
                    fused = cfg.model.name == "cnn" and device.type == "cpu"
                    if fused:
                        methods["(b') (b), PyTorch's first block"] = train_seconds(nin_single(unfused(cfg), data, Path(tmp) / "unfused"))
                    for k in ks:
                        chosen = choose_step(cfg, k, device, generic_kind(cfg)).kind
                        kinds = [chosen] + [kind for kind in ("vmap", "loop") if cfg.model.name == "cnn" and kind != chosen]
                        for kind in kinds:  # the CNN: the chosen step, and the other one beside it
                            label = f"(c) batched K={k} ({kind}{', chosen' if kind == chosen and len(kinds) > 1 else ''})"
                            methods[label] = nin_batched(cfg, data, Path(tmp) / label, k, kind)
                            if fused and kind == "loop":
                                before = nin_batched(unfused(cfg), data, Path(tmp) / f"{label}'", k, kind)
                                methods[f"(c') K={k} loop, PyTorch's first block"] = train_seconds(before)
                    if setting in GENERIC and not args.no_generic:
                        gcfg = generic_cfg(cfg, setting)
                        methods["(g) generic path"] = nin_single(gcfg, data, Path(tmp) / "generic")
                        for k in ks:
                            methods[f"(g) generic batched K={k} ({choose_step(cfg, k, device, generic_kind(gcfg)).kind})"] = nin_batched(
                                gcfg, data, Path(tmp) / f"generic{k}", k
                            )
                    times = interleaved(methods, args.repeats)
                base = statistics.median(times["(a) PyTorch + DataLoader"])
                train = statistics.median(t for t, _, _ in times["(b) nin train"])
                measure = statistics.median(m for _, m, _ in times["(b) nin train"])
                before = statistics.median(m for _, _, m in times["(b) nin train"])
                medians = {name: statistics.median(ts) for name, ts in times.items() if not name.startswith(("(b)", "(g) generic path"))}
                rows = [(name, t, "") for name, t in medians.items() if name.startswith("(a")]
                rows += [
                    ("(b) nin train (train step)", train, ""),
                    ("(b) + measurement (former)", train + before, f"+{before / train:.0%}"),
                    ("(b) + per-epoch measurement", train + measure, f"+{measure / train:.0%}"),
                ]
                rows += [(name, t, "") for name, t in medians.items() if name.startswith(("(b')", "(c"))]
                if "(g) generic path" in times:
                    g_train = statistics.median(t for t, _, _ in times["(g) generic path"])
                    g_measure = statistics.median(m for _, m, _ in times["(g) generic path"])
                    rows += [
                        ("(g) generic path (train step)", g_train, ""),
                        ("(g) + per-epoch measurement", g_train + g_measure, f"+{g_measure / g_train:.0%}"),
                    ]
                    rows += [(name, t, "") for name, t in medians.items() if name.startswith("(g)")]
                for name, seconds, extra in rows:
                    line = f"{setting:<6} {device_name:<6} {name:<36} {seconds * 1000:>11.1f} ms {base / seconds:>7.2f}x {extra:>12}"
                    print(line.rstrip(), flush=True)
                if cfg.model.name == "cnn":
                    continue  # the GEMM floor below is the MLP's
                dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
                floor, gflops = arithmetic_floor(cfg, len(data.train), device, dtype)
                chained = step_gemms(cfg, len(data.train), device, dtype)
                for name, seconds in ((f"GEMM floor ({gflops:.0f} GFLOP/s)", floor), ("(b)'s GEMMs alone, in order", chained)):
                    share = f"(b) at {seconds / train:.0%}"  # the single run's step as a fraction of this bound
                    line = f"{setting:<6} {device_name:<6} {name:<36} {seconds * 1000:>11.1f} ms {base / seconds:>7.2f}x {share:>12}"
                    print(line, flush=True)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
