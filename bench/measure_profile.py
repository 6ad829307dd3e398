"""Where the per-epoch measurement's time goes (metrics.csv's row: clean train metrics, test
metrics, norms, Tr H_z and the NIW curvature), part by part, beside the training epoch it follows,
on one device, after a warm-up epoch; medians of --repeats.

    python bench/measure_profile.py --device cuda --settings fig3 cnn --train-size 10000
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from speed import SETTINGS, nin_ensemble, setting_overrides, sync

from nin_cli.config.schema import conf_dir
from nin_cli.data.datasets import load_dataset
from nin_cli.nets.hessian import ProbedLoss
from nin_cli.nets.tangents import input_jvp
from nin_cli.seeding import generator
from nin_cli.train.rows import epoch_row, eval_batch_size, evaluate, model_norms, norm_groups, train_subset
from nin_cli.train.setup import matmul_autocast


def timed(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def parts(s) -> dict:
    """The measurement's parts as epoch_row runs them, each a callable."""
    cfg, model, device = s.cfg, s.model, s.device
    sub = train_subset(s.data.train, cfg.eval.train_samples)
    h = train_subset(s.data.train, cfg.hessian.samples)

    def train_eval():
        with matmul_autocast(cfg, device):
            evaluate(model, sub, s.loss_fn, eval_batch_size(cfg, device), population=len(s.data.train))

    def test_eval():
        with matmul_autocast(cfg, device):
            evaluate(model, s.data.test, s.loss_fn, eval_batch_size(cfg, device))

    def hessian():
        model.eval()
        p = ProbedLoss(model, h.x, h.y, s.loss_fn, s.shapes)
        p.traces(cfg.hessian.probes, generator(cfg.seed, "hutchinson/1", device))
        p.niw_curvatures()
        model.train()

    return {
        "clean train metrics": train_eval,
        "test metrics": test_eval,
        "norms": lambda: model_norms(model, norm_groups(model, s.nin_layers)),
        "Tr H_z + NIW curvature": hessian,
        "whole row (epoch_row)": lambda: epoch_row(s, 1, 0, 1.0, 0.0, 0.0, 0.05),
    }


def compare_hvps(s, device, repeats: int) -> None:
    """One Rademacher HVP w.r.t. the probes, as ProbedLoss takes it (a double backward through the
    retained graph; a convolution's double backward also computes its weight's gradient, which no
    one asked for) and by forward-mode over reverse-mode (torch.func.jvp of torch.func.grad)."""
    from torch.func import grad, jvp

    cfg, model = s.cfg, s.model
    h = train_subset(s.data.train, cfg.hessian.samples)
    gen = torch.Generator(device=device).manual_seed(0)
    vs = {n: torch.randint(0, 2, (len(h.x), *s.shapes[n]), generator=gen, device=device).mul_(2).sub_(1).float() for n in s.shapes}
    model.eval()

    def double_backward():
        deltas = {n: torch.zeros_like(v, requires_grad=True) for n, v in vs.items()}
        with torch.enable_grad():
            grads = torch.autograd.grad(s.loss_fn(model(h.x, probes=deltas), h.y), list(deltas.values()), create_graph=True)
            dot = sum((g * vs[n]).sum() for n, g in zip(deltas, grads))
            return torch.autograd.grad(dot, list(deltas.values()))

    def forward_over_reverse():
        zeros = {n: torch.zeros_like(v) for n, v in vs.items()}
        return list(jvp(grad(lambda d: s.loss_fn(model(h.x, probes=d), h.y)), (zeros,), (vs,))[1].values())

    a, b = double_backward(), forward_over_reverse()
    agree = max(float((x - y).detach().abs().max() / x.detach().abs().max().clamp_min(1e-30)) for x, y in zip(a, b))
    for fn in (double_backward, forward_over_reverse):
        t = statistics.median(timed(fn, device) for _ in range(repeats))
        print(f"  HVP by {fn.__name__:<22} {t * 1000:>9.2f} ms", flush=True)
    print(f"  (the two agree to {agree:.1e} of the largest entry)")
    if len(vs) == 1:  # the quadratic form v . H v alone, by forward mode (exact for a piecewise-linear network)
        probed = ProbedLoss(model, h.x, h.y, s.loss_fn, s.shapes, gauss_newton=True)
        t = statistics.median(timed(lambda: probed.forms(vs), device) for _ in range(repeats))
        exact = sum((hv * vs[n]).flatten(1).sum(1) for n, hv in zip(vs, a))
        form = next(iter(probed.forms(vs).values()))
        print(
            f"  v.Hv by forward mode alone   {t * 1000:>9.2f} ms  (ProbedLoss.gauss_newton; agrees to "
            f"{float((form - exact).abs().max() / exact.abs().max()):.1e} where the network is piecewise linear)"
        )
        # its J v by PyTorch's own forward-mode formulas, which give the parameters zero tangents and
        # convolve them (nets/tangents.py), where ProbedLoss takes the input's tangent alone
        (name,) = vs
        zeros = {name: torch.zeros_like(vs[name])}
        with torch.no_grad():
            t_own = statistics.median(timed(lambda: input_jvp(probed.logits_of, zeros, vs), device) for _ in range(repeats))
            t_torch = statistics.median(timed(lambda: jvp(probed.logits_of, (zeros,), (vs,)), device) for _ in range(repeats))
        print(f"  its J v: the input's tangent alone {t_own * 1000:.2f} ms, torch.func.jvp {t_torch * 1000:.2f} ms", end="")
        print(f" ({t_torch / t_own:.2f}x)")
    model.train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=["fig3", "cnn"], choices=list(SETTINGS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ops", type=int, default=0, help="also list the N operators the Hessian part spends most device time in")
    parser.add_argument("--hvp", action="store_true", help="also time one Hutchinson HVP by double backward and by forward-over-reverse")
    args = parser.parse_args()
    device = torch.device(args.device)
    for setting in args.settings:
        overrides = setting_overrides(setting, args.device) + ([f"dataset.train_size={args.train_size}"] if args.train_size else [])
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = compose("train", overrides=overrides)
        data = load_dataset(cfg.dataset, device)
        with tempfile.TemporaryDirectory() as tmp:
            single = nin_ensemble([cfg], data, Path(tmp))
            single.train_epoch([1.0])
            s = single.members[0].s
            train = statistics.median(timed(functools.partial(single.train_epoch, [1.0]), device) for _ in range(args.repeats))
            print(f"{setting} on {args.device} ({len(data.train)} images, {single.choice.kind} step): training epoch {train * 1000:.1f} ms")
            for name, fn in parts(s).items():
                fn(), fn()  # warm-up (on CUDA the row's measurement is captured on its second call)
                t = statistics.median(timed(fn, device) for _ in range(args.repeats))
                print(f"  {name:<28} {t * 1000:>9.2f} ms  {t / train:>6.1%} of the epoch", flush=True)
            if args.hvp:
                compare_hvps(s, device, args.repeats)
            if args.ops:
                with torch.profiler.profile() as prof:
                    parts(s)["Tr H_z + NIW curvature"]()
                    sync(device)
                key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
                print(prof.key_averages().table(sort_by=key, row_limit=args.ops, max_name_column_width=50))


if __name__ == "__main__":
    main()
