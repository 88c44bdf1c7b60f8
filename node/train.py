"""The local training step: fetch the assigned batches, forward/backward with gradient
accumulation over micro-batches, and hand the gradients to the optimizer.

On CUDA the forward runs under bf16 autocast (SDPA picks its fused kernels); on CPU in fp32.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from node import ranks
from node.data import TokenDataset
from node.model import Llama
from node.ranks import Ranks
from node.sharded_data import ShardedDataset
from optim.local import LocalSteps, inner_groups
from protocol.eval_tasks import Task

if TYPE_CHECKING:
    from node.sharded import Shards  # which needs micro_batches and micro_loss from here


def use_deterministic_kernels() -> None:
    """Validators replay a member's round and compare it bit for bit (node/validation.py), so
    ask for deterministic kernels, strictly: an op without one stops the node with an error rather
    than sending payloads an honest replay cannot reproduce. cuBLAS needs its workspace fixed
    before its first call. Attention runs on flash kernels, deterministic in this mode (142 ms for
    a 125m step of 16 x 2,048 tokens on an H200, against 478 ms for the plain math path), or the
    math path; the cuDNN and memory-efficient kernels are left out."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    _reproducible_mkl()
    # torch.use_deterministic_algorithms also imports inductor's config to set its flag there: a
    # second of CPU for every node started, for a compiler nodes never run
    torch._C._set_deterministic_algorithms(True, warn_only=False)
    torch.backends.cuda.enable_cudnn_sdp(False)
    torch.backends.cuda.enable_mem_efficient_sdp(False)


MKL_CBWR_AUTO_STRICT = 2 | 0x10000  # mkl_types.h: MKL_CBWR_AUTO | MKL_CBWR_STRICT
MKL_CBWR_ALL = ~0


def mkl_cbwr_switch() -> tuple[Callable[[int], int], Callable[[int], int]] | None:
    """MKL's reproducibility mode getter and setter (mkl_cbwr_get, mkl_cbwr_set, exported by
    libtorch_cpu under their service names); None for a torch build without MKL."""
    if not torch.backends.mkl.is_available():
        return None
    lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
    get, put = getattr(lib, "mkl_serv_cbwr_get", None), getattr(lib, "mkl_serv_cbwr_set", None)
    if get is None or put is None:
        raise RuntimeError("this torch build's MKL has no reproducibility switch (mkl_serv_cbwr_set)")
    return get, put


def _reproducible_mkl() -> None:
    """Outside its conditional numerical reproducibility mode, MKL's CPU GEMM may round
    differently from run to run with the alignment of its operands and the threads it takes, so
    an honest CPU node's payload could miss its validator's replay by one coefficient. The mode
    (this CPU's code branch; strict: GEMM results independent of the thread count) can only be
    chosen before MKL's first call in the process: after it, a RuntimeError says so. Torch
    builds without MKL (aarch64) have nothing to set."""
    switch = mkl_cbwr_switch()
    if switch is None:
        return
    get, put = switch
    if get(MKL_CBWR_ALL) != MKL_CBWR_AUTO_STRICT and put(MKL_CBWR_AUTO_STRICT) != 0:
        raise RuntimeError(
            "MKL ran before deterministic kernels were asked for: call use_deterministic_kernels() "
            "before the process's first matrix product"
        )


def pick_device(name: str = "auto") -> torch.device:
    """`auto`, `cpu`, `cuda` or `cuda:N`; ValueError, saying what to use, for a device this
    machine does not have."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {name}: this machine has no CUDA device; use --device cpu")
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"--device {name}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}"
            )
    return device


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu, {torch.get_num_threads()} threads"


def fitting_micro_batch(batch_size: int, fits: Callable[[int], bool]) -> int:
    """The largest divisor of batch_size that `fits` (1 when none is said to)."""
    divisors = [n for n in range(batch_size, 0, -1) if batch_size % n == 0]
    return next((n for n in divisors if fits(n)), 1)


def fits_on(model: Llama, seq_len: int, device: torch.device) -> Callable[[int], bool]:
    """Whether a forward and backward of n sequences fits the device's memory (tried on CUDA;
    the CPU is taken to hold any)."""

    def fits(n: int) -> bool:
        if device.type != "cuda":
            return True
        try:
            x = torch.zeros((n, seq_len + 1), dtype=torch.long, device=device)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                _, loss = model(x[:, :-1], x[:, 1:])
            loss.backward()
            return True
        except torch.cuda.OutOfMemoryError:
            return False
        finally:
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()

    return fits


@dataclass(frozen=True)
class StepResult:
    loss: float  # mean training loss over the step's sequences
    tokens: int


IGNORED = -100  # F.cross_entropy's ignore_index: a target outside the loss


def micro_batches(
    seqs: np.ndarray, counted: np.ndarray | None, size: int
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """The micro-batches of `size` sequences a batch (n, seq_len + 1) is cut into, each with
    which of its targets count (None: all), leaving out those where none does (a mean over no
    targets is NaN)."""
    for start in range(0, len(seqs), size):
        keep = None if counted is None else counted[start : start + size]
        if keep is None or keep.any():
            yield seqs[start : start + size], keep


def micro_loss(model: torch.nn.Module, chunk: np.ndarray, keep: np.ndarray | None, device: torch.device):
    """The mean loss of one micro-batch (under bf16 autocast on CUDA); targets not kept (a loss
    mask: chat prompts) are left out."""
    tokens = torch.from_numpy(chunk).to(device)
    targets = tokens[:, 1:]
    if keep is not None:
        targets = targets.masked_fill(~torch.from_numpy(keep).to(device), IGNORED)
    with autocast(device):
        _, loss = model(tokens[:, :-1], targets)
    return loss


Scored = tuple[np.ndarray, int]  # what an evaluation scores: token ids, and where the scored part starts


@torch.no_grad()
def score(model: torch.nn.Module, item: Scored, device: torch.device) -> float:
    """An evaluation's score of one item: for a batch of sequences (2-D ids, start 0) its loss
    summed over the sequences; for one sequence (1-D ids: a prompt and then a choice starting at
    `start`) the log-likelihood of the choice's tokens."""
    ids, start = item
    if ids.ndim == 2:
        return micro_loss(model, ids, None, device).item() * len(ids)
    tokens = torch.from_numpy(ids).to(device)
    with autocast(device):
        logits, _ = model(tokens[None, :-1])
    logprobs = torch.log_softmax(logits[0, start - 1 :].float(), dim=-1)
    return float(logprobs.gather(1, tokens[start:, None]).sum())


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Trainer:
    def __init__(
        self,
        model: Llama,
        data: TokenDataset | ShardedDataset | None,  # None: a follower rank, handed its batches
        micro_batch: int,
        device: torch.device,
        ranks: Ranks | None = None,
        shards: Shards | None = None,  # the ranks hold the model between them (node/sharded.py)
    ):
        self.model, self.data, self.micro_batch, self.device = model, data, micro_batch, device
        self.ranks, self.shards = ranks, shards

    def accumulate_gradients(self, batch_ids: Sequence[int]) -> StepResult:
        """Leave in .grad the mean-loss gradient over all sequences of these batches, added
        micro-batch by micro-batch in batch order (each batch cut into its own micro-batches), so
        it is the same bits however many ranks compute the batches (node/ranks.py)."""
        self.model.train()
        for p in self.model.parameters():
            p.grad = None
        batches = [(self.data.batch(b), self.data.batch_targets(b)) for b in batch_ids]
        total = sum(len(seqs) for seqs, _ in batches)
        if self.shards is not None:
            loss = self.shards.accumulate(self.model, batches, total, self.micro_batch)
        elif self.ranks is not None:
            loss = ranks.accumulate(self, self.ranks, batches, total)
        else:
            loss = sum(self.backward(seqs, counted, total) for seqs, counted in batches)
        return StepResult(loss / max(1, total), total * self.data.seq_len)

    def backward(self, seqs: np.ndarray, counted: np.ndarray | None, total: int, each=None) -> float:
        """Add one batch's part of a gradient over `total` sequences (its losses weighted
        n / total) to .grad, micro-batch by micro-batch; its summed loss. `each`, if given, is
        called after every micro-batch's backward (a follower rank sends .grad there)."""
        loss_sum = 0.0
        for loss, n in self._losses(seqs, counted):
            (loss * (n / total)).backward()
            loss_sum += loss.item() * n
            if each is not None:
                each()
        return loss_sum

    def round_gradients(
        self, batch_ids: Sequence[int], local: LocalSteps | None = None, lr: float | None = None
    ) -> StepResult:
        """What a round hands the optimizer in .grad: the gradient of these batches or, with local
        steps, the pseudo-gradient of inner steps over them, dealt round-robin (optim/local.py);
        the loss is the mean over the inner steps."""
        if local is None:
            return self.accumulate_gradients(batch_ids)
        groups = inner_groups(batch_ids, local.config.steps)
        steps: list[StepResult] = []
        local.run(lambda h: steps.append(self.accumulate_gradients(groups[h])), lr, steps=len(groups))
        loss = sum(r.loss for r in steps) / max(1, len(steps))
        return StepResult(loss, sum(r.tokens for r in steps))

    def evaluate(self, max_seqs: int = 64) -> float:
        """Mean loss over the first max_seqs validation sequences (the same ones every call)."""
        seqs = self.data.val_batches(max_seqs)
        chunks = [(chunk, 0) for chunk, _ in micro_batches(seqs, None, self.micro_batch)]
        return sum(self._scores(chunks)) / len(seqs)

    def choice_accuracy(self, tasks: Sequence[Task]) -> float:
        """The share of tasks whose answer is the choice the model gives the highest
        log-likelihood after the prompt (summed over the choice's tokens; ties: the first)."""
        items = [(np.array([*t.prompt, *c]), len(t.prompt)) for t in tasks for c in t.choices]
        scores, right = iter(self._scores(items)), 0
        for task in tasks:
            mine = [next(scores) for _ in task.choices]
            right += max(range(len(mine)), key=lambda i: (mine[i], -i)) == task.answer
        return right / len(tasks)

    def _scores(self, items: Sequence[Scored]) -> list[float]:
        self.model.eval()
        if self.shards is not None:
            return self.shards.scores(self.model, items)
        return [score(self.model, item, self.device) for item in items]

    def _losses(
        self, seqs: np.ndarray, counted: np.ndarray | None = None
    ) -> Iterator[tuple[torch.Tensor, int]]:
        """(mean loss, sequence count) of each micro-batch of seqs (n, seq_len + 1)."""
        for chunk, keep in micro_batches(seqs, counted, self.micro_batch):
            yield micro_loss(self.model, chunk, keep, self.device), len(chunk)
