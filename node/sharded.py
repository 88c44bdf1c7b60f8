"""A node's several GPUs holding one model between them (FSDP), for models whose weights,
gradients and activations do not fit one GPU:

    torchrun --standalone --nproc-per-node 8 -m -- eranos node run --shard --keypair id.json ...

Every rank holds 1/N of the weights (FSDP2's `fully_shard` on each block, the embedding, the
head, and the rest), and
the ranks compute a job's micro-batches side by side: in step t, rank r computes micro-batch
t * N + r. Their gradients are summed by an ordered reduce-scatter: an all-to-all, after which
each rank adds its shard of the step's micro-batch gradients, in micro-batch order, onto what
the steps before left. So the sum is the same bits one rank adds up micro-batch by micro-batch
(Trainer.accumulate_gradients) at any rank count, and a validator with another rank count
replays it exactly; NCCL's own reduce-scatter sums in ring order and would not be.

Rank 0 is the node: it keeps the master weights and the optimizer in host memory (the
optimizer computes on rank 0's device, a parameter at a time: optim/demo.py), hands each job's
micro-batches and weights to the ranks, and takes the summed gradient back into .grad a
parameter at a time. Evaluations (held-out loss, multiple-choice scores) are shared out the same
way, an item per rank per step. node/ranks.py is the other way to use several GPUs: every rank holds the
whole model (faster when it fits).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.fsdp._fully_shard._fsdp_api import ReduceScatter

from node.model import Llama, ModelConfig
from node.ranks import Batch, Ranks, share
from node.train import Scored, micro_batches, micro_loss, score


@dataclass(frozen=True)
class MicroBatch:
    batch: int  # the job's batch it was cut from
    seqs: np.ndarray
    keep: np.ndarray | None  # which targets count (None: all)


def deal(batches: Sequence[Batch], size: int) -> list[MicroBatch]:
    """A job's micro-batches in the order one rank computes them."""
    return [
        MicroBatch(i, seqs, keep)
        for i, (batch, counted) in enumerate(batches)
        for seqs, keep in micro_batches(batch, counted, size)
    ]


def summed_loss(parts: Sequence[tuple[int, float]], n_batches: int) -> float:
    """The job's summed loss from each micro-batch's (batch, loss x sequences), added as one rank
    adds them: each batch's in micro-batch order, then the batches in order."""
    per_batch = [0.0] * n_batches
    for batch, value in parts:
        per_batch[batch] += value
    return sum(per_batch)


class OrderedSum(ReduceScatter):
    """FSDP's reduce-scatter of one module's gradients, summed in micro-batch order: this rank's
    shard of each computing rank's gradient is added, in rank order, onto the sum the job's
    earlier steps left (FSDP is handed the running sum as the step's gradient, into a .grad
    cleared before each step)."""

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None
        self.computing: list[int] = []  # the ranks with a micro-batch in this step

    def allocate(self, size, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return torch.empty(*size, dtype=dtype, device=device)

    def __call__(self, output_tensor, input_tensor, group, op, async_op: bool = False) -> None:
        received = torch.empty_like(input_tensor)
        dist.all_to_all_single(received, input_tensor, group=group)
        parts = received.view(dist.get_world_size(group), -1)
        for r in self.computing:
            self.total = parts[r].clone() if self.total is None else self.total.add_(parts[r])
        output_tensor.copy_(self.total)


class Shards:
    """This rank's part of the node's model, and the gradient jobs the ranks share."""

    def __init__(self, config: ModelConfig, group: Ranks, activation_checkpointing: bool = False) -> None:
        self.group, self.device = group, group.device
        with torch.device("meta"):  # no rank ever holds the whole model
            model = Llama(config, seed=None)
        model.activation_checkpointing = activation_checkpointing
        mesh = init_device_mesh(self.device.type, (group.world,))
        for block in model.model.layers:
            fully_shard(block, mesh=mesh)
        if not config.tie_embeddings:  # a tied weight must stay in the unit holding both uses
            fully_shard(model.model.embed_tokens, mesh=mesh)
            fully_shard(model.lm_head, mesh=mesh)
        fully_shard(model, mesh=mesh)
        model.to_empty(device=self.device)
        self.model = model
        self.units = [module for module in model.modules() if isinstance(module, FSDPModule)]
        self.sums = [OrderedSum() for _ in self.units]
        for module, total in zip(self.units, self.sums):
            module.set_custom_reduce_scatter(total)
            module.set_gradient_divide_factor(1.0)

    def accumulate(self, master: Llama, batches: Sequence[Batch], total: int, micro_batch: int) -> float:
        """Rank 0: leave the batches' gradient in the master's .grad, computed across the
        ranks; the summed loss."""
        jobs = deal(batches, micro_batch)
        share(("grad", jobs, total, micro_batch), self.group)
        return summed_loss(self._job(master, jobs, total), len(batches))

    def scores(self, master: Llama, items: Sequence[Scored]) -> list[float]:
        """Rank 0: an evaluation's scores of these items (node/train.py `score`), computed
        across the ranks with the master's weights."""
        share(("score", list(items), 0, 0), self.group)
        return self._scores(master, items)

    def follow(self) -> None:
        """Ranks 1..N-1: take part in rank 0's jobs until it stops."""
        while True:
            kind, jobs, total, _ = share(None, self.group)
            if kind == "stop":
                return
            if kind == "score":
                self._scores(None, jobs)
            else:
                self._job(None, jobs, total)

    @torch.no_grad()
    def _scores(self, master: Llama | None, items: Sequence[Scored]) -> list[float]:
        self._load(master)
        world, rank = self.group.world, self.group.rank
        mine = []
        for first in range(0, len(items), world):
            at = first + rank  # a rank past the end scores the step's first item, for the collectives
            value = score(self.model, items[at if at < len(items) else first], self.device)
            if at < len(items):
                mine.append((at, value))
        everyone = [None] * world if rank == 0 else None
        dist.gather_object(mine, everyone, dst=0)
        return [value for _, value in sorted(part for rank in everyone or [] for part in rank)]

    def _job(self, master: Llama | None, jobs: list[MicroBatch], total: int) -> list[tuple[int, float]]:
        self._load(master)
        mine = self._run(jobs, total)
        losses = [None] * self.group.world if self.group.rank == 0 else None
        dist.gather_object(mine, losses, dst=0)
        self._gradients_to(master)
        for s in self.sums:
            s.total = None  # a shard of the gradient, held only during the job
        return [part for rank in losses or [] for part in rank]

    @torch.no_grad()
    def _load(self, master: Llama | None) -> None:
        """Rank 0's master weights into every rank's shards, a parameter at a time."""
        for module in self.units:  # a forward alone leaves the root's weights gathered
            module.reshard()
        masters = master.parameters() if master is not None else None
        for p in self.model.parameters():
            if masters is not None:
                full = next(masters).detach().to(self.device)
            else:
                full = torch.empty(p.shape, dtype=p.dtype, device=self.device)
            dist.broadcast(full, src=0)
            rows = full.chunk(self.group.world, dim=0)
            mine = p.to_local()
            if self.group.rank < len(rows) and mine.numel():
                mine.copy_(rows[self.group.rank])

    def _run(self, jobs: list[MicroBatch], total: int) -> list[tuple[int, float]]:
        """Compute this rank's micro-batches, a step at a time; (batch, loss x sequences) of each."""
        world, rank = self.group.world, self.group.rank
        mine = []
        for step in range(math.ceil(len(jobs) / world)):
            first = step * world
            computing = [r for r in range(world) if first + r < len(jobs)]
            for s in self.sums:
                s.computing = computing
            for p in self.model.parameters():
                p.grad = None
            # a rank past the job's end still takes part in the step's collectives, weighing 0
            at = first + rank if rank in computing else first
            job = jobs[at]
            loss = micro_loss(self.model, job.seqs, job.keep, self.device)
            (loss * (len(job.seqs) / total if rank in computing else 0.0)).backward()
            if rank in computing:
                mine.append((job.batch, loss.item() * len(job.seqs)))
        return mine

    def _gradients_to(self, master: Llama | None) -> None:
        """The summed gradient into the master's .grad (rank 0), a parameter at a time."""
        masters = master.parameters() if master is not None else None
        for p in self.model.parameters():
            target = next(masters) if masters is not None else None
            if p.grad is None:
                continue
            full = p.grad.full_tensor()
            if target is not None:
                target.grad = full.to(target.device)
            p.grad = None
