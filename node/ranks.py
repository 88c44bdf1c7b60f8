"""A node's several GPUs: launched by torchrun with N processes ("ranks"), a node shares each
gradient computation among them.

Rank 0 is the node (p2p, chain, optimizer, validation, evaluation). Ranks 1..N-1 only follow:
for every gradient rank 0 computes (a round's, an inner step's, a replay's) it sends them the
batches' tokens and broadcasts its weights; batch i of the call goes to rank i % N, and each
follower sends rank 0 the gradient of each of its micro-batches, which rank 0 adds to .grad in
the order one rank would have (Trainer.accumulate_gradients: micro-batch by micro-batch in
batch order). So the payload is the same bits at any rank count, a validator with another rank
count reproduces it, and rank 0 holds one gradient beside .grad at a time.

    torchrun --standalone --nproc-per-node 8 -m -- eranos node run --keypair id.json --coordinator ...

(`--` ends torchrun's own options, which would take `--run` for its `--run-path`.)
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import NoReturn

import numpy as np
import torch
import torch.distributed as dist

from protocol.run_config import RunConfig

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


def shard_refusal(config: RunConfig, group: Ranks | None) -> str | None:
    """Why a sharded node cannot take part in this run (None: it can). On GPUs, local steps'
    inner optimizer and overlapped rounds' replays would run on the host that holds the master
    weights, not on a GPU as the run's other members compute them; and an automatic micro batch
    is measured on one GPU holding the whole model."""
    if group is None:
        return "--shard needs several ranks: start the node with torchrun --nproc-per-node N (N >= 2)"
    if group.device.type != "cuda":
        return None
    if config.optim.inner_config() is not None:
        steps = config.optim.inner_steps
        return f"this run takes local steps (optim.inner_steps = {steps}): not with --shard on GPUs"
    if config.rounds.overlap:
        return "this run overlaps its rounds (rounds.overlap = true): not with --shard on GPUs"
    if config.data.micro_batch == 0:
        return "this run lets nodes pick their micro batch (data.micro_batch = 0): not with --shard on GPUs"
    return None


def share(value: object, ranks: Ranks) -> object:
    """Rank 0's `value` on every rank (pickled)."""
    box = [value if ranks.rank == 0 else None]
    dist.broadcast_object_list(box, src=0, device=ranks.device if ranks.device.type == "cuda" else None)
    return box[0]


def _flat(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


def accumulate(trainer, ranks: Ranks, batches: Sequence[Batch], total: int) -> float:
    """Rank 0: leave the batches' gradient in .grad, computed across the ranks; the summed loss."""
    theirs = [b for i, b in enumerate(batches) if ranks.owner(i) != 0]
    share(("grad", theirs, total, trainer.micro_batch), ranks)
    params = list(trainer.model.parameters())
    for p in params:
        dist.broadcast(p.data, src=0)
    loss = 0.0
    for i, (seqs, counted) in enumerate(batches):  # a follower computes its batches meanwhile
        if ranks.owner(i) == 0:
            loss += trainer.backward(seqs, counted, total)
        else:
            loss += _receive_batch(params, ranks.owner(i), ranks.device)
    return loss


def _receive_batch(params: list[torch.nn.Parameter], src: int, device: torch.device) -> float:
    """Add a follower's micro-batch gradients of one batch to .grad, in order; its summed loss."""
    while _recv(torch.empty(1, dtype=torch.int64, device=device), src).item():
        present = _recv(torch.empty(len(params), dtype=torch.int64, device=device), src).tolist()
        having = [p for p, here in zip(params, present) if here]
        flat = _recv(torch.empty(sum(p.numel() for p in having), dtype=params[0].dtype, device=device), src)
        at = 0
        for p in having:
            part = flat[at : at + p.numel()].view_as(p)
            at += p.numel()
            p.grad = part.clone() if p.grad is None else p.grad.add_(part)
    return _recv(torch.empty(1, dtype=torch.float64, device=device), src).item()


def _recv(t: torch.Tensor, src: int) -> torch.Tensor:
    dist.recv(t, src=src)
    return t


def stop(ranks: Ranks) -> None:
    """Rank 0: release the followers (they exit)."""
    share(("stop", [], 0, 0), ranks)


def launched() -> bool:
    """Whether torchrun started this process as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def end_rank(outcome: int | str | None = 0) -> NoReturn:
    """End a rank's process once its work is done: leave the process group, flush, and exit
    without the interpreter's finalization, which (with FSDP imported, under CPU load) aborts
    now and then in a C++ destructor ("terminate called without an active exception") after
    all the work is done, turning a finished node into a failed one for torchrun. `outcome`:
    an exit code, or a message to print and exit 1 with (as SystemExit would)."""
    if dist.is_initialized():
        dist.destroy_process_group()
    if isinstance(outcome, str):
        print(outcome, file=sys.stderr)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1 if isinstance(outcome, str) else outcome or 0)


def follow(trainer, ranks: Ranks) -> None:
    """Ranks 1..N-1: compute the micro-batch gradients of the batches rank 0 deals this rank,
    with rank 0's weights, until it stops."""
    params = list(trainer.model.parameters())
    device = ranks.device

    def send_grad() -> None:
        present = [p.grad is not None for p in params]
        dist.send(torch.ones(1, dtype=torch.int64, device=device), dst=0)
        dist.send(torch.tensor(present, dtype=torch.int64, device=device), dst=0)
        dist.send(_flat([p.grad for p in params if p.grad is not None]), dst=0)
        for p in params:
            p.grad = None

    while True:
        kind, theirs, total, trainer.micro_batch = share(None, ranks)  # a replay's may be another's
        if kind == "stop":
            return
        for p in params:
            dist.broadcast(p.data, src=0)
        # theirs: every follower's batches in call order; this rank's are every (world - 1)-th
        # of them from its own offset, as `owner` deals them
        for seqs, counted in theirs[ranks.rank - 1 :: ranks.world - 1]:
            loss = trainer.backward(seqs, counted, total, each=send_grad)
            dist.send(torch.zeros(1, dtype=torch.int64, device=device), dst=0)
            dist.send(torch.tensor([loss], dtype=torch.float64, device=device), dst=0)
