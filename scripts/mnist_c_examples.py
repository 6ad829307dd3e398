"""docs/mnist_c/examples.png: the 15 MNIST-C corruptions at MNIST-C's levels on Fashion-MNIST test
images, as `nin evaluate` makes them (seed 0). Usage: python scripts/mnist_c_examples.py [OUT]"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from nin_cli.config.schema import conf_dir  # noqa: E402
from nin_cli.data.corruptions import CORRUPTIONS, corrupt  # noqa: E402
from nin_cli.data.datasets import load_dataset  # noqa: E402
from nin_cli.robustness.evaluate import PixelSpace  # noqa: E402


def main(out: Path) -> None:
    from omegaconf import OmegaConf

    data = load_dataset(OmegaConf.load(conf_dir() / "dataset" / "fashion_mnist.yaml"))
    images = PixelSpace(data).to_pixels(data.test.x[:6]).clamp(0, 1)
    columns = [("clean", images)] + [
        (f"{name}\n(level {spec.mnist_c_level})", corrupt(images, name, spec.mnist_c_level, seed=0)) for name, spec in CORRUPTIONS.items()
    ]
    fig, axes = plt.subplots(len(images), len(columns), figsize=(1.1 * len(columns), 1.15 * len(images) + 0.5))
    for j, (title, x) in enumerate(columns):
        axes[0, j].set_title(title.replace("_", " "), fontsize=6)
        for i in range(len(images)):
            axes[i, j].imshow(x[i, 0].cpu(), cmap="gray", vmin=0, vmax=1)
            axes[i, j].axis("off")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    print(out)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/mnist_c/examples.png"))
