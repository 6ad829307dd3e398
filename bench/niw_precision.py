"""How exactly a GPU computes what nin measures: the NIWs' gradients and their norms' trajectory, in
IEEE float32 and in TF32 on CUDA (and float32 on the CPU), each against float64 on the CPU, on the
same weights, batches and noise, for every shipped network and the same networks as factories.

    python bench/niw_precision.py                  # needs CUDA for the GPU columns
    python bench/niw_precision.py --steps 200      # a longer trajectory

`grad` is max |g - g64| / max |g64| over every NIW's gradient of a batch of 128 training images
(sigma 3, a NIN at every layer); `traj` is max over steps of |norm - norm64| / norm64 of the NIW
norms along `--steps` SGD steps (lr 0.05, batch 128) from the same start. float32 rounding is
about 1e-7 a product; what a precision adds beyond it is its own.
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from nin_cli.config.schema import conf_dir
from nin_cli.data.datasets import load_dataset
from nin_cli.nets.network import build_model
from nin_cli.train.precision import set_tf32

EXAMPLES = "hydra.searchpath=[pkg://nin_examples.conf]"
NETWORKS = {
    "mlp (Fig. 3, 1x1024)": ["model=mlp"],
    "fc (2x512)": ["model=fc"],
    "cnn": ["model=cnn"],
    "resnet18": ["model=resnet18"],
    "factory mlp": [EXAMPLES, "model=my_mlp"],
    "factory cnn": [EXAMPLES, "model=my_cnn"],
}
NO_TRAJECTORY = ("resnet18",)  # float64 steps of a ResNet-18 on the CPU take minutes


def variants(cuda: bool) -> list[tuple[str, str, torch.dtype, bool]]:
    """(name, device, dtype, tf32) of each computation compared with float64 on the CPU."""
    out = [("cpu fp32", "cpu", torch.float32, False)]
    if cuda:
        out += [("cuda fp32", "cuda", torch.float32, False), ("cuda tf32", "cuda", torch.float32, True)]
    return out


def placed(model, device: str, dtype: torch.dtype, tf32: bool):
    model = copy.deepcopy(model).to(device=device, dtype=dtype)
    model.fused_block = "off"  # PyTorch's kernels in every variant: the C block has its own test
    if device == "cuda":
        set_tf32(tf32)
    return model


def niw_gradients(model, x, y, eps) -> dict[str, torch.Tensor]:
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    model.zero_grad()
    out = model(x.to(device, dtype), {n: e.to(device, dtype) for n, e in eps.items()})
    F.cross_entropy(out, y.to(device)).backward()
    return {n: model.nins[n].weight.grad.detach().double().cpu() for n in model.nins}


def niw_trajectory(model, batches, lr: float) -> torch.Tensor:
    """(steps + 1, NINs): NIW norms along plain SGD steps on the given batches and noise."""
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    norms = []
    for x, y, eps in batches:
        norms.append(torch.stack([model.nins[n].weight.detach().double().norm().cpu() for n in model.nins]))
        model.zero_grad()
        loss = F.cross_entropy(model(x.to(device, dtype), {n: e.to(device, dtype) for n, e in eps.items()}), y.to(device))
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * p.grad
    norms.append(torch.stack([model.nins[n].weight.detach().double().norm().cpu() for n in model.nins]))
    return torch.stack(norms)


def relative(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--steps", type=int, default=100, help="SGD steps of the NIW norm trajectory")
    parser.add_argument("--sigma", type=float, default=3.0)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    torch.manual_seed(0)
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfgs = {name: compose("train", overrides=[*o, "nin=all", "device=cpu"]) for name, o in NETWORKS.items() if name in args.networks}
    data = load_dataset(next(iter(cfgs.values())).dataset, torch.device("cpu"))
    names = [v[0] for v in variants(cuda)]
    where = f"CUDA {torch.cuda.get_device_name()}" if cuda else "no CUDA"
    print(f"torch {torch.__version__}; {where}; sigma {args.sigma}, {args.steps} steps")
    header = f"{'network':<22} " + " ".join(f"{n + ' grad':>15}" for n in names) + " " + " ".join(f"{n + ' traj':>15}" for n in names)
    print(header + "\n" + "-" * len(header))
    gen = torch.Generator().manual_seed(0)
    for name, cfg in cfgs.items():
        model = build_model(cfg.model, cfg.nin, data.in_shape, data.n_out, 0)
        idx = torch.randperm(len(data.train), generator=gen)[: 128 * (args.steps + 1)].view(-1, 128)
        batches = [(data.train.x[i], data.train.y[i], {n: args.sigma * torch.randn(128, generator=gen) for n in model.nins}) for i in idx]
        x, y, eps = batches[-1]
        ref = niw_gradients(placed(model, "cpu", torch.float64, False), x, y, eps)
        grads = []
        for _, device, dtype, tf32 in variants(cuda):
            got = niw_gradients(placed(model, device, dtype, tf32), x, y, eps)
            grads.append(max(relative(got[n], ref[n]) for n in ref))
        trajs: list[float | None] = [None] * len(grads)
        if not name.startswith(NO_TRAJECTORY):
            lr = float(cfg.optimizer.lr)
            ref_traj = niw_trajectory(placed(model, "cpu", torch.float64, False), batches[:-1], lr)
            trajs = [
                float(((niw_trajectory(placed(model, d, t, tf), batches[:-1], lr) - ref_traj).abs() / ref_traj).max())
                for _, d, t, tf in variants(cuda)
            ]
        cells = [f"{g:>15.1e}" for g in grads] + [f"{t:>15.1e}" if t is not None else f"{'-':>15}" for t in trajs]
        print(f"{name:<22} " + " ".join(cells), flush=True)


if __name__ == "__main__":
    main()
