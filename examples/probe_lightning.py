"""NINs as a probe of a LightningModule's training, the module left as it is: a small CNN on
Fashion-MNIST fit by a Lightning Trainer with the NINProbe callback, a NIN at each of its layers.

    pip install -e '.[lightning]' (in nin's checkout)
    python examples/probe_lightning.py                 # 3 epochs on 10,000 images, CPU
    nin summarize outputs/probe_lightning              # the probe's run, a phase per NIN

The callback prints each NIN's regime at every epoch's end and logs it to the trainer's loggers
(here a CSVLogger: nin/<layer>/phase, niw_norm, confidence, tau_niw in its metrics.csv).
"""

from __future__ import annotations

import argparse
import shutil

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nin_cli.config.schema import conf_dir
from nin_cli.data.datasets import load_dataset
from nin_cli.probe.lightning import NINProbe


class LitCNN(L.LightningModule):
    """A LightningModule as its users write them: nothing of nin in it."""

    def __init__(self, lr: float = 0.05):
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.MaxPool2d(2), nn.ReLU()
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return self.classifier(self.features(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=10_000)
    parser.add_argument("--sigma", type=float, default=3.0)
    parser.add_argument("--out", default="outputs/probe_lightning")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)  # a probe records a new run: the example starts afresh
    dataset = OmegaConf.load(conf_dir() / "dataset" / "fashion_mnist.yaml")
    dataset.train_size, dataset.test_size = args.train_size, 2000
    data = load_dataset(dataset, torch.device("cpu"))
    train = DataLoader(TensorDataset(data.train.x, data.train.y), batch_size=128, shuffle=True)
    val = DataLoader(TensorDataset(data.test.x, data.test.y), batch_size=1000)
    L.seed_everything(0)
    probe = NINProbe("all", sigma=args.sigma, measure_on=(data.train.x[:1000], data.train.y[:1000]))
    trainer = L.Trainer(
        max_epochs=args.epochs, callbacks=[probe], default_root_dir=args.out, logger=L.pytorch.loggers.CSVLogger(args.out),
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(LitCNN(), train, val)
    print(f"records: {probe.probe.run_dir}")


if __name__ == "__main__":
    main()
