"""Configuration of the compressed optimizer."""

import enum
from dataclasses import dataclass, field

from optim.schedule import LrSchedule


class ValueMode(enum.IntEnum):
    """How the selected coefficients' values travel. The number is the wire code."""

    SIGN = 1  # 1 bit: the sign (Psyche); aggregation becomes a per-coefficient sign vote
    INT8 = 2  # symmetric int8 with one fp32 absmax scale per chunk
    BF16 = 3  # bfloat16
    RAW = 4  # float64, exact; for reference-equivalence tests
    INT2 = 5  # 2 bits: sign and one of two magnitudes, with one fp32 scale per tensor


PRECONDITIONS = ("none", "rms", "adam")
OUTER_STEPS = ("sign", "values")
SELECTIONS = ("chunk", "tensor")


@dataclass(frozen=True)
class DemoConfig:
    chunk: int = 64  # block edge of the per-chunk DCT
    topk: int = 8  # coefficients sent per chunk (per chunk's worth of a tensor's entries, select "tensor")
    # where top-k picks: "chunk", the k largest of each chunk; "tensor", the largest over each whole
    # tensor, as many as its chunks' share (so busy chunks send more and quiet ones less)
    select: str = "chunk"
    # top-k's unit: 1, single coefficients; t, tiles of t x t neighbouring coefficients of a chunk
    # ranked by their sum of squares (a position per tile instead of per coefficient; topk still
    # counts coefficients, so topk / t^2 tiles go per chunk's worth)
    tile: int = 1
    beta: float = 0.999  # momentum decay
    alpha: float = 1.0  # error feedback: fraction of each sent coefficient removed from momentum
    values: ValueMode = ValueMode.SIGN
    weight_decay: float = 0.0  # decoupled, scaled by the learning rate
    clip_grad_norm: float | None = None  # clip the global gradient norm before compress
    # local adaptive scaling of each gradient before it enters the momentum (never sent):
    # "none", "rms" (divide each tensor by its RMS) or "adam" (elementwise, by a second moment)
    precondition: str = "none"
    precondition_beta: float = 0.999  # "adam": decay of the second moment
    schedule: LrSchedule = field(default_factory=LrSchedule)
    # how apply moves the weights: "sign" of the aggregate (DeMo) or the aggregate's values
    # scaled by lr (the outer step over local steps' pseudo-gradients, optim/local.py)
    outer_step: str = "sign"

    def check(self) -> None:
        if self.chunk < 1 or self.topk < 1:
            raise ValueError(f"chunk and topk must be positive, got {self.chunk}, {self.topk}")
        if not 1 <= self.tile <= self.chunk:
            raise ValueError(f"tile must be in [1, chunk], got {self.tile}")
        if not 0 <= self.beta < 1:
            raise ValueError(f"beta must be in [0, 1), got {self.beta}")
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ValueError(f"clip_grad_norm must be positive, got {self.clip_grad_norm}")
        if self.precondition not in PRECONDITIONS:
            raise ValueError(f"precondition must be one of {PRECONDITIONS}, got {self.precondition!r}")
        if not 0 < self.precondition_beta < 1:
            raise ValueError(f"precondition_beta must be in (0, 1), got {self.precondition_beta}")
        if self.select not in SELECTIONS:
            raise ValueError(f"select must be one of {SELECTIONS}, got {self.select!r}")
        if self.outer_step not in OUTER_STEPS:
            raise ValueError(f"outer_step must be one of {OUTER_STEPS}, got {self.outer_step!r}")
        if self.outer_step == "values" and self.values == ValueMode.SIGN:
            raise ValueError(
                "outer_step 'values' needs the values sent (values int2, int8, bf16 or raw), not signs"
            )
        self.schedule.check()
