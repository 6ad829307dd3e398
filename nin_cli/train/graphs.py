"""Replay a whole training step as one CUDA graph.

A vmapped forward, backward and update of K small networks is ~100 kernel launches whose Python
and launch overhead (~1 ms) exceeds their GPU time; a captured graph launches them all at once.
The step's tensors (parameters, learning rates, masks) must stay the same objects between calls,
and its inputs are copied into static buffers before each replay.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from omegaconf import DictConfig

from nin_cli.errors import console

Inputs = tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]
Step = Callable[..., torch.Tensor]


class GraphedStep:
    """Call `fn(x, y, eps) -> Tensor` eagerly for a few warm-up steps, then capture and replay it.

    Inputs of another shape than the captured ones (the epoch's last, smaller batch) run eagerly.
    If capture fails (an op that syncs with the host, say) the step stays eager for good.
    """

    WARMUP = 3

    def __init__(self, fn: Step):
        self.fn = fn
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.failed = False
        self.static: Inputs | None = None
        self.out: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, y: torch.Tensor, eps: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.failed or (self.static is not None and x.shape != self.static[0].shape):
            return self.fn(x, y, eps)
        if self.graph is None:
            self.calls += 1
            if self.calls <= self.WARMUP:
                return self._side_stream(x, y, eps)
            self._capture(x, y, eps)
            if self.failed:
                return self.fn(x, y, eps)
        else:
            sx, sy, seps = self.static  # type: ignore[misc]
            sx.copy_(x)
            sy.copy_(y)
            for name, value in eps.items():
                seps[name].copy_(value)
        self.graph.replay()  # type: ignore[union-attr]
        return self.out.clone()  # type: ignore[union-attr]

    def _side_stream(self, x, y, eps) -> torch.Tensor:
        """Warm-up on a side stream, as capture requires (lazy cuBLAS/autograd initialisation)."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            out = self.fn(x, y, eps)
        torch.cuda.current_stream().wait_stream(stream)
        return out

    def _capture(self, x, y, eps) -> None:
        self.static = (x.clone(), y.clone(), {name: value.clone() for name, value in eps.items()})
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.out = self.fn(*self.static)
        except RuntimeError as exc:
            console.print(f"[yellow]CUDA graph capture failed ({str(exc).splitlines()[0]}); stepping eagerly")
            self.failed = True
            torch.cuda.synchronize()
            return
        self.graph = graph


def graphed_on_cuda(fn: Step, cfg: DictConfig, device: torch.device) -> Step:
    """`fn` replayed as a CUDA graph on CUDA unless cuda_graphs=false; `fn` itself elsewhere."""
    return GraphedStep(fn) if device.type == "cuda" and bool(cfg.get("cuda_graphs", True)) else fn


class GraphedMeasurement:
    """Call `fn(probes) -> {column: 0-dim tensor}` (train/rows.py's measure) eagerly once, on a side
    stream, then capture it and replay it for every later epoch.

    Its inputs are the model's parameters (updated in place by the steps, and by loading a
    checkpoint), the data's fixed subsamples and the epoch's probe vectors, copied into the
    captured ones. Probes of another shape run eagerly; a capture that fails leaves it eager."""

    def __init__(self, fn: Callable[[list[dict[str, torch.Tensor]]], dict[str, torch.Tensor]]):
        self.fn = fn
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.failed = False
        self.static: list[dict[str, torch.Tensor]] | None = None
        self.out: dict[str, torch.Tensor] | None = None

    def __call__(self, probes: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        shapes = [{n: v.shape for n, v in p.items()} for p in probes]
        if self.failed or (self.static is not None and shapes != [{n: v.shape for n, v in p.items()} for p in self.static]):
            return self.fn(probes)
        self.calls += 1
        if self.graph is None:
            if self.calls == 1:
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    out = self.fn(probes)
                torch.cuda.current_stream().wait_stream(stream)
                return out
            self.static = [{n: v.clone() for n, v in p.items()} for p in probes]
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):
                    self.out = self.fn(self.static)
            except RuntimeError as exc:
                console.print(f"[yellow]CUDA graph capture of the epoch measurement failed ({str(exc).splitlines()[0]}); measuring eagerly")
                self.failed = True
                torch.cuda.synchronize()
                return self.fn(probes)
            self.graph = graph
        else:
            for static, given in zip(self.static, probes):
                for name, value in given.items():
                    static[name].copy_(value)
        self.graph.replay()
        return {name: value.clone() for name, value in self.out.items()}  # type: ignore[union-attr]


def graphed_measurement(fn, cfg: DictConfig, device: torch.device):
    """`fn` replayed as a CUDA graph on CUDA unless cuda_graphs=false; `fn` itself elsewhere."""
    return GraphedMeasurement(fn) if device.type == "cuda" and bool(cfg.get("cuda_graphs", True)) else fn


def replayed(step) -> bool:
    """Whether a training step (train/steps.py) runs as a captured CUDA graph."""
    return isinstance(getattr(step, "run", None), GraphedStep)
