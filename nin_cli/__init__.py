"""nin: an experiment runner for Noise Injection Nodes (NINs).

From Python: `nin_cli.train_run(*overrides, run_dir=...)` (not `train`: that name is the
training package, nin_cli/train), `nin_cli.load_runs(path)`,
`nin_cli.load_metrics(path, table="metrics"|"steps")`, `nin_cli.load_model(run_dir, raw_inputs=...)`
and `nin_cli.load_data(run_dir)` (nin_cli/interface/api.py), imported on first use so that the `nin` command
starts fast."""

from nin_cli.version import __version__ as __version__

# Imported where used: the API's functions load torch; `import nin_cli` alone stays instant (PEP 562).

__all__ = ["load_data", "load_metrics", "load_model", "load_runs", "train_run"]


def __getattr__(name: str):
    if name in __all__:
        from nin_cli.interface import api

        return getattr(api, name)
    raise AttributeError(f"module 'nin_cli' has no attribute {name!r}")
