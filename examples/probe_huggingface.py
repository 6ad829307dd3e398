"""NINs as a probe of a Hugging Face Trainer's training, the model left as it is: a small CNN on
Fashion-MNIST written as the Trainer takes a model (keywords in, a dict with the loss and the
logits out), trained by `transformers.Trainer` with the NINProbeCallback, a NIN at each layer.

    pip install -e '.[huggingface]' (in nin's checkout)
    python examples/probe_huggingface.py               # 3 epochs on 10,000 images, CPU
    nin summarize outputs/probe_huggingface/nin_probe  # the probe's run, a phase per NIN

The callback logs each NIN's regime at every epoch's end (Python's logging, and the Trainer's log
history in trainer_state.json: nin/<layer>/phase, niw_norm, confidence, tau_niw).
"""

from __future__ import annotations

import argparse
import logging
import shutil

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments

from nin_cli.config.schema import conf_dir
from nin_cli.data.datasets import load_dataset
from nin_cli.probe.huggingface import NINProbeCallback


class ImageClassifier(nn.Module):
    """A model as the Trainer takes one: nothing of nin in it."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.MaxPool2d(2), nn.ReLU()
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, pixel_values, labels=None):
        logits = self.classifier(self.features(pixel_values))
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits}


class Images(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=10_000)
    parser.add_argument("--sigma", type=float, default=3.0)
    parser.add_argument("--out", default="outputs/probe_huggingface")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("transformers").setLevel(logging.WARNING)
    shutil.rmtree(args.out, ignore_errors=True)  # a probe records a new run: the example starts afresh
    dataset = OmegaConf.load(conf_dir() / "dataset" / "fashion_mnist.yaml")
    dataset.train_size, dataset.test_size = args.train_size, 2000
    data = load_dataset(dataset, torch.device("cpu"))
    torch.manual_seed(0)
    probe = NINProbeCallback("all", sigma=args.sigma, measure_on=(data.train.x[:1000], data.train.y[:1000]))
    training = TrainingArguments(
        output_dir=args.out, num_train_epochs=args.epochs, per_device_train_batch_size=128, learning_rate=0.05, optim="sgd",
        lr_scheduler_type="constant", use_cpu=True, report_to="none", save_strategy="no", logging_strategy="epoch",
        disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = Trainer(model=ImageClassifier(), args=training, train_dataset=Images(data.train.x, data.train.y), callbacks=[probe])
    trainer.train()
    print(f"records: {probe.probe.run_dir}")


if __name__ == "__main__":
    main()
