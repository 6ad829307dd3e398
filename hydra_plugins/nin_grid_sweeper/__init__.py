"""Hydra sweeper of `nin train -m` grids (`hydra/sweeper=grid`, the default): Hydra's basic sweeper without composing each job again."""
