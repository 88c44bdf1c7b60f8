"""Local steps between exchanges (DiLoCo, SparseLoCo): a node takes H inner optimizer steps on
its own batches, then hands the change of its weights since the exchange (the pseudo-gradient,
start - end) to the compressed optimizer as if it were a gradient, with the weights back where
the exchange left them. The outer step (DemoOptimizer.apply) then moves every replica alike.
Bytes per optimizer step fall by H. The inner optimizer's state (AdamW's moments and step)
persists across exchanges and is part of the node's committed optimizer state (optim/state.py),
so that a validator replays the H inner steps exactly.

    local = LocalSteps(model.parameters(), InnerConfig(steps=4, lr=1e-3))
    local.run(lambda h: trainer.accumulate_gradients(groups[h]))   # .grad = pseudo-gradient
    payload = demo.compress()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from optim.schedule import LrSchedule


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
        for p in self.params:  # created up front (AdamW makes them at its first step): a state to load
            self.inner.state[p] = {
                "step": torch.tensor(0.0),
                "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
            }

    def state_tensors(self) -> list[tuple[torch.Tensor, bool]]:
        """Every tensor of the inner state, in parameter order, each with whether it must be
        non-negative (the step and the second moment)."""
        return [(self.inner.state[p][name], name != "exp_avg") for p in self.params for name in _STATE_NAMES]

    def run(
        self, gradients: Callable[[int], object], lr: float | None = None, steps: int | None = None
    ) -> None:
        """`gradients(h)` fills `.grad` for inner step h (0 <= h < steps, the config's unless
        given); afterwards each `.grad` is start - end and the weights are back at the start."""
        for group in self.inner.param_groups:
            group["lr"] = self.config.lr if lr is None else lr
        start = [p.detach().clone() for p in self.params]
        for h in range(self.config.steps if steps is None else steps):
            self.inner.zero_grad(set_to_none=True)
            gradients(h)
            self.inner.step()
        with torch.no_grad():
            for p, s in zip(self.params, start):
                p.grad = s - p.detach()
                p.copy_(s)


_STATE_NAMES = ("step", "exp_avg", "exp_avg_sq")


def inner_groups(batch_ids: Sequence[int], steps: int) -> list[list[int]]:
    """The batches of each inner step: a round's share dealt round-robin over at most `steps`
    steps, none empty (fewer batches than steps: one step per batch)."""
    return [list(batch_ids[h::steps]) for h in range(min(steps, len(batch_ids)))]


def inner_lr(config: InnerConfig, schedule: LrSchedule, step: int) -> float:
    """The inner learning rate at an outer step: the outer schedule's shape, peaking at config.lr."""
    return config.lr * schedule.lr_at(step) / schedule.lr
