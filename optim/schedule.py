"""Learning-rate schedules: constant, cosine, and warmup-stable-decay, each with linear warmup."""

import math
from dataclasses import dataclass

KINDS = ("constant", "cosine", "wsd")


@dataclass(frozen=True)
class LrSchedule:
    kind: str = "constant"
    lr: float = 1e-3
    warmup: int = 0  # steps of linear warmup from lr / warmup to lr
    total: int = 0  # length of the run; cosine and wsd reach final_ratio * lr at this step
    final_ratio: float = 0.1
    decay_fraction: float = 0.2  # wsd: the last fraction of `total` decays linearly

    def check(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"schedule kind must be one of {KINDS}, got {self.kind!r}")
        if not self.lr > 0 or self.warmup < 0:
            raise ValueError(f"invalid schedule {self}")
        if not 0 <= self.final_ratio <= 1:
            raise ValueError(f"final_ratio must be in [0, 1], got {self.final_ratio}")
        if self.kind != "constant" and self.total <= self.warmup:
            raise ValueError(f"{self.kind} schedule needs total > warmup, got {self}")
        if not 0 < self.decay_fraction <= 1:
            raise ValueError(f"decay_fraction must be in (0, 1], got {self.decay_fraction}")

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        if self.kind == "constant":
            return self.lr
        if self.kind == "cosine":
            progress = min(1.0, (step - self.warmup) / (self.total - self.warmup))
            return self.lr * self._toward_final(0.5 * (1 + math.cos(math.pi * progress)))
        decay_start = self.total - max(1, round(self.decay_fraction * self.total))
        if step < decay_start:
            return self.lr
        progress = min(1.0, (step - decay_start) / (self.total - decay_start))
        return self.lr * self._toward_final(1 - progress)

    def _toward_final(self, remaining: float) -> float:
        return self.final_ratio + (1 - self.final_ratio) * remaining
