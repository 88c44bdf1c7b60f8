"""Local steps between exchanges (DiLoCo, SparseLoCo): a node takes H inner optimizer steps on
its own batches, then hands the change of its weights since the exchange (the pseudo-gradient,
start - end) to the compressed optimizer as if it were a gradient, with the weights back where
the exchange left them. The outer step (DemoOptimizer.apply) then moves every replica alike.
Bytes per optimizer step fall by H; the inner optimizer's state stays on the node.

    local = LocalSteps(model.parameters(), InnerConfig(steps=4, lr=1e-3))
    local.run(lambda h: trainer.accumulate_gradients(batches[h]))   # .grad = pseudo-gradient
    payload = demo.compress()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class InnerConfig:
    steps: int = 1  # H: inner steps per exchange
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1

    def check(self) -> None:
        if self.steps < 1:
            raise ValueError(f"inner steps must be >= 1, got {self.steps}")
        if not self.lr > 0:
            raise ValueError(f"inner lr must be positive, got {self.lr}")


class LocalSteps:
    """H AdamW steps, then the pseudo-gradient in each parameter's `.grad`."""

    def __init__(self, params: Iterable[torch.nn.Parameter], config: InnerConfig) -> None:
        config.check()
        self.config, self.params = config, list(params)
        self.inner = torch.optim.AdamW(
            self.params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
        )

    def run(self, gradients: Callable[[int], object], lr: float | None = None) -> None:
        """`gradients(h)` fills `.grad` for inner step h (0 <= h < steps); afterwards each `.grad`
        is start - end and the weights are back at the start."""
        for group in self.inner.param_groups:
            group["lr"] = self.config.lr if lr is None else lr
        start = [p.detach().clone() for p in self.params]
        for h in range(self.config.steps):
            self.inner.zero_grad(set_to_none=True)
            gradients(h)
            self.inner.step()
        with torch.no_grad():
            for p, s in zip(self.params, start):
                p.grad = s - p.detach()
                p.copy_(s)
