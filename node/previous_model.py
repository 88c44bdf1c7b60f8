"""The weights a node held before its last apply, kept for overlapped rounds.

With `rounds.overlap` a round trains on the model one update behind: by the time its commits
close and its contributions are replayed, every member has applied the round before it. The
replay must run on the round's own model, so a member keeps a copy of the weights from before
its last apply (on the CPU, so GPU memory is not doubled) and loads it for the job; the current
weights are copied aside and put back afterwards, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class PreviousModel:
    def __init__(self) -> None:
        self.hash: bytes = b""
        self._weights: list[torch.Tensor] = []

    def keep(self, model: torch.nn.Module, digest: bytes) -> None:
        """Remember `model`'s weights, whose hash is `digest`, before they change."""
        self.hash = digest
        self._weights = [p.detach().to("cpu", copy=True) for p in model.parameters()]

    @contextmanager
    def loaded(self, model: torch.nn.Module, current: bytes, wanted: bytes) -> Iterator[bool]:
        """Run the block on the weights with hash `wanted`: the current ones (`current` is their
        hash) or the kept ones. Yields whether the node holds them at all."""
        if wanted == current:
            yield True
            return
        if wanted != self.hash:
            yield False
            return
        params = list(model.parameters())
        aside = [p.detach().to("cpu", copy=True) for p in params]
        _copy_into(params, self._weights)
        try:
            yield True
        finally:
            _copy_into(params, aside)


def _copy_into(params: list[torch.Tensor], values: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, v in zip(params, values, strict=True):
            p.copy_(v)
