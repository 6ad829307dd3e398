"""J v by forward mode with the input's tangent alone (nets/tangents.py): the Gauss-Newton
measurement's pass computes each convolution's, Linear's and max-pool's tangent from the input's
tangent alone, and must give torch.func.jvp's numbers for any such network, in either layout (what
it saves is timed by bench/measure_profile.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn
from torch.func import jvp

from nin_cli.nets.tangents import input_jvp


class PoolWithIndices(nn.Module):
    """A max-pool asked for its indices, positionally, as some networks call it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, indices = F.max_pool2d(x, 3, 2, 1, 1, True, True)
        assert indices.dtype == torch.int64
        return out


def networks() -> dict[str, nn.Module]:
    return {
        "cnn": nn.Sequential(
            nn.Conv2d(2, 8, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1),
            nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 3 * 3, 10),
        ),
        "strided, grouped, reflect-padded, no bias": nn.Sequential(
            nn.Conv2d(2, 8, 3, stride=2, padding=1, padding_mode="reflect", bias=False), nn.ReLU(),
            nn.Conv2d(8, 8, 3, groups=4, dilation=2, padding=2), PoolWithIndices(), nn.Flatten(), nn.LazyLinear(10),
        ),
        "pool with padding and ceil mode": nn.Sequential(
            nn.Conv2d(2, 6, 5, padding=2), nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), nn.Flatten(), nn.LazyLinear(4),
        ),
    }  # fmt: skip


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("name", list(networks()))
def test_the_input_tangents_pass_gives_jvps_numbers(name, layout):
    torch.manual_seed(0)
    net = networks()[name]
    x = torch.randn(5, 2, 12, 12)
    net(x)  # the lazy layers' shapes
    if layout == "channels_last":
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    v = torch.randn(5, 2, 12, 12)
    seen = []
    for module in net:
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d)):
            module.register_forward_hook(lambda m, args, out: seen.append((out, fwAD.unpack_dual(out).tangent)))

    def fn(deltas: dict[str, torch.Tensor]) -> torch.Tensor:
        return net(x + deltas["in"])

    zeros = {"in": torch.zeros_like(x)}
    with torch.no_grad():
        out, jv = input_jvp(fn, zeros, {"in": v})
        seen = seen[:]  # the hooks' from this pass alone
        want_out, want_jv = jvp(fn, (zeros,), ({"in": v},))
    assert torch.equal(out, want_out)
    assert torch.allclose(jv, want_jv, rtol=1e-5, atol=1e-6) and jv.abs().max() > 0.1
    assert len(seen) >= 3 and all(t is not None for _, t in seen)  # the tangent went through every layer as a dual


def test_a_parameter_with_a_tangent_of_its_own_goes_to_pytorchs_formula():
    """The shortcut holds only where the parameters carry no tangent: a weight with one gets the
    full derivative, conv(x_t, W) + conv(x, W_t)."""
    torch.manual_seed(0)
    x, v, w, w_t = torch.randn(3, 2, 6, 6), torch.randn(3, 2, 6, 6), torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3)
    _, jv = input_jvp(lambda d: F.conv2d(x + d["in"], fwAD.make_dual(w, w_t), None, 1, 1), {"in": torch.zeros_like(x)}, {"in": v})
    assert torch.allclose(jv, F.conv2d(v, w, None, 1, 1) + F.conv2d(x, w_t, None, 1, 1), rtol=1e-5, atol=1e-5)


FIRST_PASSES = {
    "input_jvp": (
        "from nin_cli.nets.tangents import input_jvp\n"
        "net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))\n"
        "out, jv = input_jvp(lambda d: net(d['x']), {'x': x}, {'x': torch.ones_like(x)})\n"
        "assert jv.shape == (5, 2)\n"
    ),
    "hvp by torch.func.jvp": (
        "from nin_cli.nets.hessian import ProbedLoss\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.a, self.b = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)\n"
        "    def forward(self, x, probes):\n"
        "        return self.b(torch.tanh(self.a(x) + probes['a']))\n"
        "probed = ProbedLoss(Net(), x, torch.tensor([0, 1, 0, 1, 0]), torch.nn.functional.cross_entropy, {'a': (4,)}, 'forward')\n"
        "assert probed.hvp({'a': torch.ones(5, 4)})['a'].shape == (5, 4)\n"
    ),
}


@pytest.mark.parametrize("first", list(FIRST_PASSES))
def test_the_first_forward_mode_pass_of_a_process_warns_of_nothing_of_torchs(first):
    """torch loads its forward-mode decompositions at a process's first make_dual (its own or
    torch.func.jvp's) through torch.jit.script, which torch 2.14 deprecates with a FutureWarning: a
    researcher's loop would print it at the probe's first measurement, a GPU run at its CNN's. Each
    of nin's forward-mode passes in a fresh process, so that the load is the first."""
    code = "import torch\nx = torch.randn(5, 3)\n" + FIRST_PASSES[first]
    done = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
