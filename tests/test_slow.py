"""Long checks on the real dataset (`make test-slow`); skipped where Fashion-MNIST is not installed."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import make_cfg, nin_cli

from nin_cli.data import load_dataset
from nin_cli.errors import ConfigError

pytestmark = pytest.mark.slow


def have_fashion_mnist() -> bool:
    try:
        load_dataset(make_cfg("dataset=fashion_mnist").dataset)
        return True
    except ConfigError:
        return False


@pytest.mark.skipif(not have_fashion_mnist(), reason="Fashion-MNIST not installed (make data)")
def test_fig3_sweep_finds_the_four_phases_in_order(tmp_path):
    """The README's Fig. 3 result, shortened to 12 epochs and one seed."""
    proc = nin_cli(
        "train",
        "-m",
        "+experiment=fig3",
        "progress=false",
        "epochs=12",
        "seed=0",
        "noise.sigma=1,10,100,1000",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr
    assert nin_cli("summarize", str(tmp_path)).returncode == 0
    phases = pd.read_csv(tmp_path / "phases.csv").sort_values("noise.sigma")
    assert list(phases["phase"]) == ["decoupled", "decay", "catapult", "divergent"]
