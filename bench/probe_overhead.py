"""What the NIN probe costs a researcher's own loop: the same plain PyTorch loop with and without
`nin_cli.probe` at its default schedule, side by side in one process, on Fashion-MNIST.

    python bench/probe_overhead.py                        # the Fig. 3 MLP and the CNN, all 60k images, CPU
    python bench/probe_overhead.py --train-size 60000 --device cuda

Networks, written as plain loops (examples/nin_examples/networks.py): the Fig. 3 MLP (784-1024-10,
batch 1000, SGD lr 0.01: the paper's Fig. 3 protocol) and the CNN (two conv blocks and two Linear
layers, batch 128, lr 0.05), each with one NIN at its first layer (`nins="input"`, sigma 3).

The two loops are stepped in turn, batch by batch on the same batches, each step timed (--repeats
epochs; the median epoch of each), so load from elsewhere on the machine falls on both alike. "probe" is everything the probe
adds at its defaults: the NIN's noise and weight in every step, the norms logged every step
(steps.csv), the event check, and at the epoch's end the measurement (clean loss and accuracy on
the 1,000-image measurement set, Tr H_z on 256 of them with one probe, the norms), the rows written.
The measurement's own cost is printed beside it, and what a schedule of measurements every N steps
would cost (--measure-every).

A third loop runs the probe at sigma 0: every operation of the probe (the noise drawn, scaled by 0 and
added, the NIW's gradient, the norms, the measurement) on activations equal to the plain loop's. Its
overhead is the probe's own arithmetic; the rest of the sigma-3 overhead is the network's own
kernels running on noisy activations (CPU max-pooling, for one, branches on its values).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from nin_examples.networks import cnn, mlp
from omegaconf import OmegaConf

from nin_cli.config.schema import conf_dir
from nin_cli.data.datasets import load_dataset
from nin_cli.probe import attach

SETTINGS = {
    "fig3_mlp": (lambda d: mlp(d.in_shape, d.n_out, depth=1, width=1024), 1000, 0.01),
    "cnn": (lambda d: cnn(d.in_shape, d.n_out), 128, 0.05),
}


def step(net, opt, x, y, probe=None) -> float:
    """One step of the plain loop (with the probe's call where it is attached); seconds."""
    start = time.perf_counter()
    loss = F.cross_entropy(net(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if probe is not None:
        probe.step(loss)
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def epochs_side_by_side(loops, data, batch: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per epoch of each loop, the loops stepped in turn batch by batch on the same batches
    (so that load from elsewhere falls on both alike); a probe's epoch_end counts in its epoch."""
    n = len(data.train)
    gen = torch.Generator(device=data.train.x.device).manual_seed(0)
    times: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(rounds):
        spent = dict.fromkeys(loops, 0.0)
        perm = torch.randperm(n, generator=gen, device=data.train.x.device)
        for s in range(0, n, batch):
            idx = perm[s : s + batch]
            x, y = data.train.x[idx], data.train.y[idx]
            for name, (net, opt, probe) in loops.items():
                spent[name] += step(net, opt, x, y, probe)
        for name, (_, _, probe) in loops.items():
            if probe is not None:
                start = time.perf_counter()
                probe.epoch_end()
                spent[name] += time.perf_counter() - start
            times[name].append(spent[name])
    return times


def measurement_seconds(probe, rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        probe._measure("bench")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=60_000, help="training images per epoch (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--measure-every", type=int, default=0, help="also price a measurement every N steps")
    parser.add_argument("--networks", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args()
    device = torch.device(args.device)
    dataset = OmegaConf.load(conf_dir() / "dataset" / "fashion_mnist.yaml")
    dataset.train_size, dataset.test_size = args.train_size, 1000
    data = load_dataset(dataset, device)
    threads = torch.get_num_threads()
    print(f"device {device}, {args.train_size} training images, {args.repeats} rounds, torch {torch.__version__}, {threads} threads")
    print(
        f"{'network':<10} {'plain s/epoch':>14} {'probe s/epoch':>14} {'overhead':>9} {'at sigma 0':>11}"
        f" {'measurement s':>14} {'of the epoch':>13}"
    )
    scratch = Path(tempfile.mkdtemp(prefix="nin-probe-bench-"))
    try:
        for name in args.networks:
            build, batch, lr = SETTINGS[name]
            torch.manual_seed(0)
            loops = {}
            for label, sigma in (("plain", None), ("probe", 3.0), ("sigma0", 0.0)):
                net = build(data).to(device)
                opt = torch.optim.SGD(net.parameters(), lr=lr)
                probe = None if sigma is None else attach(
                    net, "input", sigma=sigma, optimizer=opt, run_dir=scratch / f"{name}-{label}",
                    measure_on=(data.train.x[:1000], data.train.y[:1000]), samples_per_epoch=len(data.train),
                )  # fmt: skip
                loops[label] = (net, opt, probe)
            epochs_side_by_side(loops, data, batch, 1)  # warm-up of each (allocations, kernels)
            times = epochs_side_by_side(loops, data, batch, args.repeats)
            a, b, c = (statistics.median(times[label]) for label in ("plain", "probe", "sigma0"))
            probe = loops["probe"][2]
            m = measurement_seconds(probe)
            print(
                f"{name:<10} {a:>14.3f} {b:>14.3f} {100 * (b / a - 1):>8.1f}% {100 * (c / a - 1):>10.1f}% {m:>14.3f} {100 * m / a:>12.1f}%"
            )
            if args.measure_every:
                steps = -(-len(data.train) // batch)
                extra = m * steps / args.measure_every
                print(
                    f"{'':<10} a measurement every {args.measure_every} steps adds {extra:.3f} s/epoch: {100 * extra / a:.1f}% of the epoch"
                )
            for _, _, attached in loops.values():
                if attached is not None:
                    attached.detach()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
