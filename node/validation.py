"""Re-examining another member's contribution: replay, and the sign-agreement score.

Replay is the verdict: the validator loads the optimizer state the target committed to at the
start of the round, recomputes the gradient on the target's own batches at the shared model
(with local steps: the inner steps, from the inner state the target committed to), runs the
same compress, and compares. An honest payload and next state come out identical
(deterministic kernels) or within numeric noise; noise, copies, flips, stale payloads and
payloads trained on other data do not, from the first round on. The sign-agreement score below
needs no state but cannot separate other-data payloads early in training; it stays as the
baseline that scripts/bench_validation.py measures replay against.

Sign agreement asks how often the payload's 1-bit signs agree with the signs of the
recomputed gradient's DCT coefficients at the payload's own positions
(../shared/notes/validation.md): honest ~0.93-0.98 once momentum has settled; noise, copies,
other data and stale payloads near 0.5, sign-flipped ones near 0, a "lazy" payload (top-k of
the current gradient, no momentum) exactly 1.0.

Structural problems (hash, decode) never reach here: the payload was decoded strictly first.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from optim import state_chunks
from optim.codec import Payload, decode
from optim.dct import dct_blocks
from optim.demo import DemoOptimizer
from optim.local import LocalSteps
from optim.spec import ParamSpec, TensorSpec
from optim.state import Source, StateError, load_state, reset_state, write_state


@dataclass(frozen=True)
class Score:
    agreement: float  # fraction of the payload's coefficients whose sign matches
    coefficients: int  # how many were compared


@torch.no_grad()
def sign_agreement(payload: Payload, grads: Sequence[torch.Tensor | None], spec: ParamSpec) -> Score:
    """Score `payload` against `grads` (the recomputed gradient of each parameter, spec order)."""
    agree = total = 0
    for tp, grad, ts in zip(payload.tensors, grads, spec.tensors, strict=True):
        if grad is None or len(tp.groups) == 0:
            continue
        coefficients = dct_blocks(grad, ts.layout)  # (B, Hp, Wp) block layout
        at = ts.positions(torch.from_numpy(tp.groups), torch.from_numpy(tp.indices))
        reference = torch.sign(coefficients.view(-1)[at.to(coefficients.device)]).cpu()
        sent = torch.sign(torch.from_numpy(tp.values)).to(reference.dtype)
        agree += int((reference == sent).sum())
        total += reference.numel()
    return Score(agree / total if total else 0.0, total)


@dataclass(frozen=True)
class Replay:
    payload: Payload  # what the target should have sent
    state_after: bytes  # the sha256 of the state it should hold after sending it


def start_replay(
    scratch: DemoOptimizer, state_before: Source | None, local: LocalSteps | None = None
) -> None:
    """Load the state the target committed to (None: fresh, all zeros) into `scratch` (and the
    inner state into `local`, with local steps); on StateError both are reset, so what follows
    is the same on every honest validator."""
    if state_before is None:
        reset_state(scratch, local)
        return
    try:
        load_state(scratch, state_before, local)
    except StateError:
        reset_state(scratch, local)
        raise


def replay(scratch: DemoOptimizer, step: int, local: LocalSteps | None = None) -> Replay:
    """Run the target's compress, from the state `start_replay` loaded, on the gradients (or
    the pseudo-gradient of the inner steps) left in `scratch`'s parameters' .grad."""
    scratch.step = step
    payload = decode(scratch.spec, scratch.compress())
    return Replay(payload, write_state(scratch, None, local))


def replay_evidence(grads: Sequence[torch.Tensor | None], loss: float) -> bytes:
    """What only a replay of the target's batches knows: a digest of the recomputed gradient and
    loss. Every honest validator of one kind of hardware sends the same bytes; a validator that
    accepts without replaying cannot (the target publishes neither)."""
    h = hashlib.sha256(struct.pack("<d", loss))
    for g in grads:
        h.update(b"\0" if g is None else g.detach().cpu().contiguous().numpy().tobytes())
    return h.digest()


def payload_match(sent: Payload, replayed: Payload, spec: ParamSpec, values: bool = False) -> float:
    """The share of (coefficient, sign) pairs the two payloads have in common, over the larger;
    with `values`, (coefficient, value) pairs, so that in the INT8, BF16 and RAW modes a payload
    must carry exactly the values the replay computed, not only their signs."""
    common = larger = 0
    for a, b, ts in zip(sent.tensors, replayed.tensors, spec.tensors, strict=True):
        ka, kb = _pairs(a, ts, values), _pairs(b, ts, values)
        common += len(ka & kb)
        larger += max(len(ka), len(kb))
    return common / larger if larger else 1.0


def _pairs(t, ts: TensorSpec, values: bool) -> set[tuple[int, int]]:
    positions = ts.positions(torch.from_numpy(t.groups), torch.from_numpy(t.indices)).numpy().ravel()
    flat = np.ascontiguousarray(t.values, dtype=np.float64).ravel()
    what = flat.view(np.int64) if values else (flat > 0).astype(np.int64)
    return set(zip(positions.tolist(), what.tolist()))


@dataclass(frozen=True)
class SampledCheck:
    payload_match: float  # share of the sampled chunks whose payload rows are the replay's, exactly
    state_match: float  # share of the sampled leaves whose next state hashes as the target's index says


def sampled_replay(
    scratch: DemoOptimizer, step: int, sent: Payload, leaves: Sequence[int], after: Mapping[int, bytes]
) -> SampledCheck:
    """Run the target's compress from the sampled leaves of its state (loaded by
    optim.state_chunks.load_leaves, the rest zero) on the gradient in `scratch`'s .grad, and
    compare the sampled chunks: their payload rows with `sent`'s, their next-state leaves with
    the hashes the target's next-state tree gives them (`after`, by leaf)."""
    scratch.step = step
    if scratch.config.select == "tensor":
        return _sampled_tensor_replay(scratch, sent, leaves, after)
    replayed = decode(scratch.spec, scratch.compress())
    rows = states = 0
    for leaf in leaves:
        i, c = state_chunks.locate(scratch, leaf)
        a, b = state_chunks.chunk_rows(sent.tensors[i], c), state_chunks.chunk_rows(replayed.tensors[i], c)
        rows += (a is None and b is None) or (
            a is not None and b is not None and np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
        )
        states += hashlib.sha256(state_chunks.read_leaf(scratch, leaf)).digest() == after[leaf]
    return SampledCheck(rows / len(leaves), states / len(leaves))


def _sampled_tensor_replay(
    scratch: DemoOptimizer, sent: Payload, leaves: Sequence[int], after: Mapping[int, bytes]
) -> SampledCheck:
    """Top-k over a whole tensor sends from a chunk what passes the tensor's threshold, which the
    sampled chunks alone do not give. So the payload's own selection is checked instead: in each
    sampled chunk its coefficients carry the replayed momentum's signs; in each tensor no sampled
    unit (coefficient or tile) left out scores higher than one sent (the sent ones are the top of
    one threshold; a tensor left out must have no momentum); error feedback on them gives the
    next-state leaf."""
    scratch.fold()
    tensor_of, signs_agree, smallest_sent, largest_unsent, states = {}, {}, {}, {}, 0
    for leaf in leaves:
        i, c = state_chunks.locate(scratch, leaf)
        tensor_of[leaf] = i
        tp, ts = sent.tensors[i], scratch.spec.tensors[i]
        block = state_chunks.chunk_block(scratch, i, c)
        momentum = block.reshape(-1).clone()
        units, values = state_chunks.sent_in_chunk(tp, ts, c)
        sent_units = torch.from_numpy(units)
        at = ts.coefficients(sent_units[None])[0]
        picked = momentum[at]
        signs_agree[leaf] = bool(np.array_equal(picked.cpu().numpy() > 0, values.reshape(-1) > 0))
        scores = ts.unit_scores(momentum.abs())
        left = torch.ones_like(scores, dtype=torch.bool)
        left[sent_units] = False
        if not len(tp.groups):
            sent_min = 0.0  # a tensor left out must have no momentum
        else:
            sent_min = float(scores[sent_units].min()) if len(units) else float("inf")
        unsent_max = float(scores[left].max()) if bool(left.any()) else 0.0
        smallest_sent[i] = min(smallest_sent.get(i, float("inf")), sent_min)
        largest_unsent[i] = max(largest_unsent.get(i, 0.0), unsent_max)
        momentum[at] = picked - scratch.config.alpha * picked
        block.copy_(momentum.view_as(block))
        states += hashlib.sha256(state_chunks.read_leaf(scratch, leaf)).digest() == after[leaf]
    threshold_holds = {i: smallest_sent[i] >= largest_unsent[i] for i in smallest_sent}
    rows = sum(signs_agree[leaf] and threshold_holds[tensor_of[leaf]] for leaf in leaves)
    return SampledCheck(rows / len(leaves), states / len(leaves))
