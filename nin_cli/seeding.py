"""Independent, named random streams derived from one seed.

Each consumer (init, data order, noise, evaluation probes) owns its own generator, so adding a
draw in one place never shifts another, and a batched member can replay a single run exactly.
"""

from __future__ import annotations

import hashlib

import torch


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for the named stream of `seed`."""
    digest = hashlib.sha256(f"{seed}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(seed: int, stream: str, device: torch.device | str = "cpu") -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(stream_seed(seed, stream))
    return gen


def resumed_generator(seed: int, stream: str, epoch: int, device: torch.device | str) -> torch.Generator:
    """The named stream as it goes on after `epoch` on a device its saved state is not for (a CUDA
    generator's state does not load into a CPU one, nor the reverse): seeded anew from the run's
    seed, the stream and the epoch, so that every such resume of the run draws the same."""
    return generator(seed, f"{stream}/resumed-after-epoch-{epoch}", device)
