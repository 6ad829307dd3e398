"""NINs as a probe inside any training loop: `attach` for a plain PyTorch loop (live.py),
`NINProbe`, a Lightning callback (lightning.py, with the `lightning` extra), and
`NINProbeCallback`, a Hugging Face Trainer's (huggingface.py, with the `huggingface` extra)."""

from nin_cli.probe.live import NINStatus, Probe, attach

__all__ = ["NINStatus", "Probe", "attach"]
