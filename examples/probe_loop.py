"""NINs as a probe in a plain PyTorch loop: the Fig. 3 MLP (784-1024-10, batch 1000, SGD lr 0.01)
on Fashion-MNIST, one NIN at its first layer, its regime printed as it trains.

    python examples/probe_loop.py                      # sigma^2 = 0.01 in the papers' units, 5 epochs
    python examples/probe_loop.py --sigma2-paper 1     # a catapult
    python examples/probe_loop.py --compare            # then `nin train` of the same network, seed and noise, row by row

The loop is a researcher's own; the probe's four calls are marked. It walks nin's data order for
the seed (the `data` stream) so that --compare can set its records beside `nin train`'s.
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from nin_examples.networks import mlp
from omegaconf import OmegaConf

import nin_cli
from nin_cli.config.schema import conf_dir
from nin_cli.data.datasets import load_dataset
from nin_cli.factories import seeded
from nin_cli.probe import attach
from nin_cli.seeding import generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigma2-paper", type=float, default=0.01)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", default="outputs/probe_loop")
    parser.add_argument("--compare", action="store_true", help="also run `nin train` of the same and compare the records")
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)  # a probe records a new run: the example starts afresh
    data = load_dataset(OmegaConf.load(conf_dir() / "dataset" / "fashion_mnist.yaml"), torch.device("cpu"))
    with seeded(0):  # the network's own init, drawn as `nin train model.init=factory seed=0` draws it
        net = mlp(data.in_shape, data.n_out, depth=1, width=1024)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    probe = attach(  # (1) NINs on the live network; the NIWs join the optimizer
        net, "input", sigma2_paper=args.sigma2_paper, optimizer=opt, run_dir=out / "probe", epochs=args.epochs,
        measure_on=(data.train.x[:1000], data.train.y[:1000]), test=(data.test.x, data.test.y), samples_per_epoch=len(data.train),
    )  # fmt: skip
    gen, n = generator(0, "data"), len(data.train)
    for _ in range(args.epochs):
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, 1000):
            idx = perm[start : start + 1000]
            loss = F.cross_entropy(net(data.train.x[idx]), data.train.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            probe.step(loss)  # (2) the batch's loss and the norms
        row = probe.epoch_end()  # (3) the epoch's measurement
        print(f"epoch {probe.epoch}: test acc {row['test_acc']:.4f}; " + "; ".join(map(str, probe.status())))
    probe.detach()  # (4) the network as it was; the run completed
    print(f"records: {out / 'probe'}  (nin summarize {out / 'probe'})")
    if args.compare:
        compare(out, args)


def compare(out: Path, args) -> None:
    """`nin train` of the same network, seed, data order and noise; every value of both runs'
    metrics.csv and steps.csv but the seconds, compared."""
    nin_cli.train_run(
        "hydra.searchpath=[pkg://nin_examples.conf]", "model=my_mlp", "model.width=1024", "model.init=factory", "nin=input",
        "batch_size=1000", "optimizer.lr=0.01", f"noise.sigma2_paper={args.sigma2_paper}", f"epochs={args.epochs}",
        "eval.train_samples=1000", "hessian.samples=256", "hessian.niw_curvature=false", "progress=false", run_dir=out / "nin_train",
    )  # fmt: skip
    for table in ("metrics.csv", "steps.csv"):
        ours, theirs = (list(csv.DictReader(open(out / run / table))) for run in ("probe", "nin_train"))
        compared, worst, where = 0, 0.0, ""
        for a, b in zip(ours, theirs):
            for key in a:
                if key == "seconds" or (a[key] == b[key] == "nan"):
                    continue
                x, y = float(a[key]), float(b[key])
                compared += 1
                diff = abs(x - y) / max(abs(y), 1e-12)
                if diff > worst:
                    worst, where = diff, key
        print(f"{table}: {len(ours)} rows against {len(theirs)}; {compared} values compared, largest relative difference {worst:.2g}"
              + (f" ({where})" if where else ""))  # fmt: skip


if __name__ == "__main__":
    main()
