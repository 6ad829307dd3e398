"""nin: an experiment runner for Noise Injection Nodes (NINs)."""

__version__ = "0.1.0"
