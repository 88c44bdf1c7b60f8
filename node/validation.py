"""Re-examining another member's contribution: the sign-agreement score.

A validator holds the same model as the target at the start of the round, recomputes the
gradient on the target's own assigned batches, and asks how often the payload's 1-bit signs
agree with the signs of that gradient's DCT coefficients at the payload's own positions
(../shared/notes/validation.md). Honest payloads agree despite momentum (~0.93-0.98 once it has
settled); noise, copies, other data and stale payloads sit near 0.5, sign-flipped ones near 0,
and a "lazy" payload (top-k of the current gradient, no momentum) at exactly 1.0, so the band
is two-sided. Preconditioning scales each element before the momentum; signs of the scaled
gradient's DCT need not match the raw gradient's everywhere, which the band absorbs.

Structural problems (hash, decode) never reach here: the payload was decoded strictly first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from optim.codec import Payload
from optim.dct import block_positions, dct_blocks
from optim.spec import ParamSpec


@dataclass(frozen=True)
class Score:
    agreement: float  # fraction of the payload's coefficients whose sign matches
    coefficients: int  # how many were compared

    def accept(self, low: float, high: float) -> bool:
        return self.coefficients > 0 and low <= self.agreement <= high


@torch.no_grad()
def sign_agreement(payload: Payload, grads: Sequence[torch.Tensor | None], spec: ParamSpec) -> Score:
    """Score `payload` against `grads` (the recomputed gradient of each parameter, spec order)."""
    agree = total = 0
    for tp, grad, ts in zip(payload.tensors, grads, spec.tensors, strict=True):
        if grad is None or len(tp.chunks) == 0:
            continue
        coefficients = dct_blocks(grad, ts.layout)  # (B, Hp, Wp) block layout
        at = block_positions(ts.layout, torch.from_numpy(tp.chunks), torch.from_numpy(tp.indices))
        reference = torch.sign(coefficients.view(-1)[at.to(coefficients.device)]).cpu()
        sent = torch.sign(torch.from_numpy(tp.values)).to(reference.dtype)
        agree += int((reference == sent).sum())
        total += reference.numel()
    return Score(agree / total if total else 0.0, total)
