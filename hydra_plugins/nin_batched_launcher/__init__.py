"""Hydra launcher that trains a sweep's jobs as batched ensembles (nin_cli.train)."""
