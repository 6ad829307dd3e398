"""What the NIN probe costs a researcher's own loop: the same plain PyTorch loop with and without
`nin_cli.probe` at its default schedule, side by side in one process, on Fashion-MNIST.

    python bench/probe_overhead.py                        # the Fig. 3 MLP and the CNN, all 60k images, CPU
    python bench/probe_overhead.py --train-size 60000 --device cuda

Networks, written as plain loops (examples/nin_examples/networks.py): the Fig. 3 MLP (784-1024-10,
batch 1000, SGD lr 0.01: the paper's Fig. 3 protocol) and the CNN (two conv blocks and two Linear
layers, batch 128, lr 0.05) in PyTorch's default NCHW layout ("cnn") and laid out channels-last
("cnn_cl": `net.to(memory_format=torch.channels_last)`, PyTorch's advice for convolutions on the
CPU and nin's own layout), each with one NIN at its first layer (`nins="input"`, sigma 3).

The loops are stepped in turn, batch by batch on the same batches (in a fresh random order for
each batch), each step timed, over --repeats epochs. "overhead" is paired: each batch's probe step
against its plain step, run back to back, summed over every round (a pair where either step took
over 3x its loop's median, an interruption from outside, is left out of both), plus each epoch's
epoch_end against the plain epoch; "rounds" is the same for each round alone, lowest and highest.
"probe" is everything the probe adds at its defaults: the NIN's noise and weight in every step, the
norms logged every step (steps.csv), the event check, and at the epoch's end the measurement (clean
loss and accuracy on the 1,000-image measurement set, Tr H_z on 256 of them with one probe, the
norms), the rows written. The measurement's own cost is printed beside it, and what a schedule of
measurements every N steps would cost (--measure-every). "plain again" is a second plain loop read
the same way against the first: what the bench reads where nothing differs, its floor.

Two more loops split the sigma-3 overhead in two. "noisy plain" is the plain loop whose first layer
is given the same kind of noise by a hook (sigma 3 times a fixed weight drawn as the NIW is, no
gradient, no records): what the network's own kernels cost on noisy activations (the CPU's
max-pooling branches on its values), which any noise injection brings; the probe's own cost at
sigma 3 is "probe" against it ("probe own"). "sigma 0" is the probe with its noise scaled by 0:
every operation of the probe on the plain loop's activations.

The five loops share one process's heap. glibc gives memory back to the system once the free space
at its top passes a threshold, and a later step then takes page faults to zero it again; with five
loops' allocations interleaved, which loop's steps take them follows the interleaving, not the
loop (a loop alone soon reuses the same memory step after step). `--heap kept` (the default) sets
glibc's thresholds (mallopt) so that the heap is kept and every loop steps on memory it already
has; `--heap default` leaves them.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import shutil
import statistics
import tempfile
import time
import timeit
from pathlib import Path

import torch
import torch.nn.functional as F
from nin_examples.networks import cnn, mlp
from omegaconf import OmegaConf

from nin_cli.config.schema import conf_dir
from nin_cli.data.datasets import load_dataset
from nin_cli.nets.nin import batch_rows, crossing_settings, image_by_aten, image_through
from nin_cli.probe import attach
from nin_cli.train.engine import cpu_model

SETTINGS = {
    "fig3_mlp": (lambda d: mlp(d.in_shape, d.n_out, depth=1, width=1024), 1000, 0.01),
    "cnn": (lambda d: cnn(d.in_shape, d.n_out), 128, 0.05),
    # the same CNN laid out channels-last, as PyTorch's performance guide advises for convolutions on
    # the CPU and as `nin train` lays out its own (oneDNN's NHWC kernels; its max-pool vectorized)
    "cnn_cl": (lambda d: cnn(d.in_shape, d.n_out).to(memory_format=torch.channels_last), 128, 0.05),
}
OUTLIER = 3.0  # a step over this many times its loop's median step was interrupted (the OS, another process)


def first_layer(net: torch.nn.Module) -> torch.nn.Module:
    """The layer `nins="input"` puts the NIN at: the first Linear or Conv2d (these networks reach
    their layers in the order they list them)."""
    return next(m for m in net.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))


def add_plain_noise(net: torch.nn.Module, in_shape: tuple[int, ...], sigma: float) -> None:
    """The noise a NIN at the first layer adds, given by a hook with no gradient and no records:
    sigma eps W at a Linear's output, at a convolution's input, W drawn N(0, 1/fan_in) as the NIW."""
    layer = first_layer(net)
    conv = isinstance(layer, torch.nn.Conv2d)
    shape = in_shape if conv else (layer.out_features,)
    fan_in = layer.weight[0].numel()
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(1), device="cpu").to(layer.weight.device) / fan_in**0.5
    gen = torch.Generator(device=layer.weight.device).manual_seed(2)

    def eps(n: int) -> torch.Tensor:
        return sigma * torch.randn(n, generator=gen, device=weight.device)

    if conv:  # on the (small) input, as the probe adds it
        layer.register_forward_pre_hook(lambda m, args: (torch.addcmul(args[0], eps(len(args[0])).view(-1, 1, 1, 1), weight), *args[1:]))
    else:  # into the layer's fresh output in place, as the probe adds it
        layer.register_forward_hook(lambda m, args, out: out.addmm_(eps(len(out))[:, None], weight[None]))


def keep_heap() -> bool:
    """glibc's heap kept as it grows: no trimming, no separate mapping under 32 MB (the largest
    threshold glibc takes), so that no step pays page faults for memory another loop gave back.
    False where the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        trim, mmap = -1, -3  # M_TRIM_THRESHOLD, M_MMAP_THRESHOLD (malloc.h)
        return bool(libc.mallopt(trim, 1 << 30)) and bool(libc.mallopt(mmap, 32 << 20))
    except (OSError, AttributeError):
        return False


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


class Timed:
    """One loop's timings: each round's step seconds (batch by batch) and its epoch_end seconds."""

    def __init__(self) -> None:
        self.steps: list[list[float]] = []
        self.ends: list[float] = []

    def epoch(self, r: int) -> float:
        """Round r's epoch: its steps, each at most OUTLIER x the loop's median step, and its epoch_end."""
        cap = OUTLIER * statistics.median(self.steps[r])
        return sum(min(t, cap) for t in self.steps[r]) + self.ends[r]


def epochs_side_by_side(loops, data, batch: int, rounds: int) -> dict[str, Timed]:
    """Each loop's step and epoch_end seconds, the loops stepped in turn batch by batch on the same
    batches (so that load from elsewhere falls on each alike), in a fresh random order for each
    batch: no loop is always first, or always the one after another's caches (in a fixed cycle,
    rotated or not, a loop always follows the same one, and read 3% off its twin)."""
    n = len(data.train)
    gen = torch.Generator(device=data.train.x.device).manual_seed(0)
    order = torch.Generator().manual_seed(1)
    timed = {name: Timed() for name in loops}
    names = list(loops)
    for _ in range(rounds):
        for name in names:
            timed[name].steps.append([])
        perm = torch.randperm(n, generator=gen, device=data.train.x.device)
        for s in range(0, n, batch):
            idx = perm[s : s + batch]
            x, y = data.train.x[idx], data.train.y[idx]
            for i in torch.randperm(len(names), generator=order).tolist():
                name = names[i]
                net, opt, probe = loops[name]
                timed[name].steps[-1].append(step(net, opt, x, y, probe))
        for name, (_, _, probe) in loops.items():
            start = time.perf_counter()
            if probe is not None:
                probe.epoch_end()
            timed[name].ends.append(time.perf_counter() - start if probe is not None else 0.0)
    return timed


def overhead(loop: Timed, base: Timed) -> tuple[float, float, float]:
    """loop's seconds over base's, less 1: (over all rounds, the lowest and the highest round's).
    Paired step by step: the two steps of one batch ran back to back, so that a change of the
    machine's pace between rounds or within one falls on both; a pair where either step took over
    OUTLIER x its loop's median (an interruption from outside) is left out of both. Each round adds
    loop's epoch_end seconds against base's epoch (the measurement, the rows written)."""
    per_round = []
    for r in range(len(base.steps)):
        caps = OUTLIER * statistics.median(loop.steps[r]), OUTLIER * statistics.median(base.steps[r])
        pairs = [(a, b) for a, b in zip(loop.steps[r], base.steps[r]) if a <= caps[0] and b <= caps[1]]
        mine, theirs = sum(a for a, _ in pairs), sum(b for _, b in pairs)
        per_round.append((mine, theirs, loop.ends[r] - base.ends[r], base.epoch(r)))
    steps = sum(m for m, _, _, _ in per_round) / sum(t for _, t, _, _ in per_round)
    ends = sum(e for _, _, e, _ in per_round) / sum(ep for _, _, _, ep in per_round)
    rounds = [m / t + e / ep - 1 for m, t, e, ep in per_round]
    return steps + ends - 1, min(rounds), max(rounds)


def measurement_seconds(probe, rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        probe._measure("bench")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def crossing_back(repeats: int = 200) -> None:
    """The NIW's gradient crossing the CNN's conv1 back as one image (ConvInputNoise's backward
    after its matrix-vector product), as the probe takes it (nets/nin.py: image_through) and by
    aten's convolution_backward, in both layouts; microseconds a call, the best of five runs."""
    for layout in (torch.contiguous_format, torch.channels_last):
        conv = torch.nn.Conv2d(1, 32, 3, padding=1).to(memory_format=layout)
        weight, grad = conv.weight.detach(), torch.randn(1, 32, 28, 28).contiguous(memory_format=layout)
        rows, nhwc = batch_rows(grad)  # the one image's gradient as ConvInputNoise sums it, in its layout
        image, settings = torch.Size((1, 28, 28)), crossing_settings(conv)
        ways = {
            "aten": functools.partial(image_by_aten, grad[0], weight, image, settings),
            "the probe's": functools.partial(image_through, rows[0], grad.shape[1:], nhwc, weight, image, settings),
        }
        err = float((ways["aten"]() - ways["the probe's"]()).abs().max())
        times = {k: min(timeit.repeat(f, number=repeats, repeat=5)) / repeats * 1e6 for k, f in ways.items()}
        said = ", ".join(f"{k} {t:.1f} us" for k, t in times.items())
        print(f"conv1's NIW gradient back through the kernels, {'channels-last' if nhwc else 'NCHW'}: {said}; max difference {err:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=60_000, help="training images per epoch (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--measure-every", type=int, default=0, help="also price a measurement every N steps")
    parser.add_argument("--networks", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--crossing", action="store_true", help="only time the NIW's gradient crossing conv1 back, two ways")
    parser.add_argument("--heap", choices=("kept", "default"), default="kept", help="glibc's heap kept as it grows, or as it comes")
    args = parser.parse_args()
    if args.crossing:
        return crossing_back()
    heap = "kept" if args.heap == "kept" and keep_heap() else "default"
    device = torch.device(args.device)
    dataset = OmegaConf.load(conf_dir() / "dataset" / "fashion_mnist.yaml")
    dataset.train_size, dataset.test_size = args.train_size, 1000
    data = load_dataset(dataset, device)
    threads = torch.get_num_threads()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    print(f"device {device} ({where}), {args.train_size} training images, {args.repeats} rounds", end="")
    print(f", torch {torch.__version__}, {threads} threads, heap {heap}")
    print(
        f"{'network':<10} {'plain s/epoch':>14} {'probe s/epoch':>14} {'overhead':>9} {'rounds':>13} {'plain again':>12}"
        f" {'noisy plain':>12} {'probe own':>10} {'at sigma 0':>11} {'measurement s':>14} {'of the epoch':>13}"
    )
    scratch = Path(tempfile.mkdtemp(prefix="nin-probe-bench-"))
    try:
        for name in args.networks:
            build, batch, lr = SETTINGS[name]
            torch.manual_seed(0)
            loops = {}
            for label, sigma in (("plain", None), ("again", None), ("noisy", None), ("probe", 3.0), ("sigma0", 0.0)):
                net = build(data).to(device)
                opt = torch.optim.SGD(net.parameters(), lr=lr)
                if label == "noisy":
                    add_plain_noise(net, data.in_shape, 3.0)
                probe = None if sigma is None else attach(
                    net, "input", sigma=sigma, optimizer=opt, run_dir=scratch / f"{name}-{label}",
                    measure_on=(data.train.x[:1000], data.train.y[:1000]), samples_per_epoch=len(data.train),
                )  # fmt: skip
                loops[label] = (net, opt, probe)
            epochs_side_by_side(loops, data, batch, 1)  # warm-up of each (allocations, kernels)
            timed = epochs_side_by_side(loops, data, batch, args.repeats)
            plain = timed["plain"]
            a = statistics.median(plain.epoch(r) for r in range(args.repeats))
            b = statistics.median(timed["probe"].epoch(r) for r in range(args.repeats))
            total, low, high = overhead(timed["probe"], plain)
            again, noisy = overhead(timed["again"], plain)[0], overhead(timed["noisy"], plain)[0]
            own, zero = overhead(timed["probe"], timed["noisy"])[0], overhead(timed["sigma0"], plain)[0]
            m = measurement_seconds(loops["probe"][2])
            print(
                f"{name:<10} {a:>14.3f} {b:>14.3f} {100 * total:>8.1f}% {f'{100 * low:.1f}..{100 * high:.1f}%':>13}"
                f" {100 * again:>11.1f}% {100 * noisy:>11.1f}% {100 * own:>9.1f}% {100 * zero:>10.1f}% {m:>14.3f} {100 * m / a:>12.1f}%"
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
