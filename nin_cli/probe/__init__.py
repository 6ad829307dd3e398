"""NINs as a probe inside any training loop: `attach` for a plain PyTorch loop (live.py), and
`NINProbe`, a Lightning callback (lightning.py, with the `lightning` extra)."""

from nin_cli.probe.live import NINStatus, Probe, attach

__all__ = ["NINStatus", "Probe", "attach"]
