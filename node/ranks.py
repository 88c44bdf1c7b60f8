"""A node's several GPUs: launched by torchrun with N processes ("ranks"), a node shares each
gradient computation among them.

Rank 0 is the node (p2p, chain, optimizer, validation, evaluation). Ranks 1..N-1 only follow:
for every gradient rank 0 computes (a round's, an inner step's, a replay's) it sends them the
batches' tokens and broadcasts its weights; batch i of the call goes to rank i % N, and each
follower sends rank 0 its batches' gradients, which rank 0 adds in batch order. Each batch's
gradient is summed over its own micro-batches alone (Trainer.batch_gradient), so the payload is
the same bits at any rank count, and a validator with another rank count reproduces it.

    torchrun --standalone --nproc-per-node 8 -m -- eranos node run --keypair id.json --coordinator ...

(`--` ends torchrun's own options, which would take `--run` for its `--run-path`.)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger("eranos.node.ranks")
# A follower waits in a collective for rank 0's next job as long as the run lasts; torchrun ends
# the group when any rank exits, so a lost rank 0 never leaves a follower waiting.
WAIT = timedelta(days=365)

Batch = tuple[np.ndarray, np.ndarray | None]  # (sequences, which targets count; None: all)


@dataclass(frozen=True)
class Ranks:
    rank: int
    world: int
    device: torch.device

    def owner(self, i: int) -> int:
        return i % self.world


def from_environment(device: torch.device) -> Ranks | None:
    """The process group torchrun describes in the environment, joined; None when the node runs
    alone. Each rank takes the CUDA device of its local rank, or the CPU (gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return None
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=WAIT)
    return Ranks(rank, world, device)


def share(value: object, ranks: Ranks) -> object:
    """Rank 0's `value` on every rank (pickled)."""
    box = [value if ranks.rank == 0 else None]
    dist.broadcast_object_list(box, src=0, device=ranks.device if ranks.device.type == "cuda" else None)
    return box[0]


def _flat(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


def _unflat(flat: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    out, at = [], 0
    for t in like:
        out.append(flat[at : at + t.numel()].view_as(t).clone())
        at += t.numel()
    return out


def gradients(trainer, ranks: Ranks, batches: Sequence[Batch], total: int) -> Iterator[tuple[list, float]]:
    """Rank 0: each batch's (gradient, summed loss), in batch order, computed across the ranks."""
    theirs = [b for i, b in enumerate(batches) if ranks.owner(i) != 0]
    share(("grad", theirs, total, trainer.micro_batch), ranks)
    params = list(trainer.model.parameters())
    for p in params:
        dist.broadcast(p.data, src=0)
    for i, (seqs, counted) in enumerate(batches):  # a follower computes its next batch meanwhile
        if ranks.owner(i) == 0:
            yield trainer.batch_gradient(seqs, counted, total)
            continue
        flat = torch.empty(sum(p.numel() for p in params), dtype=params[0].dtype, device=ranks.device)
        loss = torch.empty(1, dtype=torch.float64, device=ranks.device)
        dist.recv(flat, src=ranks.owner(i))
        dist.recv(loss, src=ranks.owner(i))
        yield _unflat(flat, params), float(loss)


def stop(ranks: Ranks) -> None:
    """Rank 0: release the followers (they exit)."""
    share(("stop", [], 0, 0), ranks)


def follow(trainer, ranks: Ranks) -> None:
    """Ranks 1..N-1: compute the gradients of the batches rank 0 deals this rank, with rank 0's
    weights, until it stops."""
    params = list(trainer.model.parameters())
    while True:
        kind, theirs, total, trainer.micro_batch = share(None, ranks)  # a replay's may be another's
        if kind == "stop":
            return
        for p in params:
            dist.broadcast(p.data, src=0)
        # theirs: the batches of every follower in call order; this rank's are every
        # (world - 1)-th of them from its own offset, matching `owner`
        for seqs, counted in theirs[ranks.rank - 1 :: ranks.world - 1]:
            grads, loss = trainer.batch_gradient(seqs, counted, total)
            dist.send(_flat(grads), dst=0)
            dist.send(torch.tensor([loss], dtype=torch.float64, device=ranks.device), dst=0)
