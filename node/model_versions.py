"""Copies of the weights of the last models a node held, by hash, kept for overlapped rounds.

With `rounds.overlap` a round trains on the model one update behind: by the time its commits
close and its contributions are replayed, every member has applied the round before it. A
replay must run on the round's own model, so a member keeps a copy of the weights of its last
two models (on the CPU, so GPU memory is not doubled): its replica for checks loads the one a
round names, and a late training swaps it into the model and back, bit for bit. Synchronous
rounds keep none: every job runs on the model the node holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class ModelVersions:
    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._kept: dict[bytes, list[torch.Tensor]] = {}  # oldest first

    def remember(self, model: torch.nn.Module, digest: bytes) -> None:
        """Keep a copy of `model`'s weights, whose hash is `digest` (the oldest copy goes)."""
        if not self.keep:
            return
        weights = [p.detach().to("cpu", copy=True) for p in model.parameters()]
        kept = {h: w for h, w in self._kept.items() if h != digest}
        kept[digest] = weights
        self._kept = dict(list(kept.items())[-self.keep :])  # one assignment: readers see old or new

    def has(self, digest: bytes) -> bool:
        return digest in self._kept

    def load_into(self, model: torch.nn.Module, digest: bytes) -> bool:
        """Copy the kept weights with hash `digest` into `model`; False when none are kept."""
        weights = self._kept.get(digest)
        if weights is None:
            return False
        _copy_into(list(model.parameters()), weights)
        return True

    @contextmanager
    def loaded(self, model: torch.nn.Module, current: bytes, wanted: bytes) -> Iterator[bool]:
        """Run the block on the weights with hash `wanted`: the current ones (`current` is their
        hash) or kept ones, the current ones put back afterwards. Yields whether it has them."""
        if wanted == current or wanted not in self._kept:
            yield wanted == current
            return
        params = list(model.parameters())
        aside = [p.detach().to("cpu", copy=True) for p in params]
        self.load_into(model, wanted)
        try:
            yield True
        finally:
            _copy_into(params, aside)


def _copy_into(params: list[torch.Tensor], values: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, v in zip(params, values, strict=True):
            p.copy_(v)
