"""Hydra sweeper that locates phase boundaries adaptively (`hydra/sweeper=map`, `nin map`)."""
