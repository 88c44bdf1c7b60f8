"""Dishonest nodes, for the simulator's `--byzantine KIND@NODE` and the validation tests.

Each payload kind turns what an honest node would send into what a cheating one sends instead:
- noise: random indices and signs, the honest payload's size (costs nothing to make);
- copy: another member's payload of the same round, claimed as its own (its header still names
  the author, so the coordinator's check refuses it);
- flip: the honest payload with every sign flipped;
- other-data: trained on batches it was not assigned (the runtime swaps the batch ids);
- stale: its own payload from 3 rounds earlier, re-stamped for this step;
- malformed: bytes that do not decode.
And one lying validator:
- liar: sends honest payloads but rejects every contribution it is asked to check.
"""

from __future__ import annotations

import numpy as np

from optim.codec import Payload, TensorPayload, decode, encode
from optim.spec import ParamSpec

KINDS = ("noise", "copy", "flip", "other-data", "stale", "malformed", "liar")
STALE_ROUNDS = 3
OTHER_DATA_OFFSET = 1_000_000  # batch ids this far past the assigned ones


def _reencode(spec: ParamSpec, p: Payload, tensors: list[TensorPayload], step: int | None = None) -> bytes:
    """Other tensors under the honest payload's stamp (origin and round): only replay can tell."""
    return encode(spec, p.step if step is None else step, tensors, round=p.round, origin=p.origin)


def flip(spec: ParamSpec, payload: bytes) -> bytes:
    p = decode(spec, payload)
    return _reencode(spec, p, [TensorPayload(t.chunks, t.indices, -t.values) for t in p.tensors])


def noise(spec: ParamSpec, payload: bytes, seed: int) -> bytes:
    p, rng = decode(spec, payload), np.random.default_rng(seed)
    tensors = []
    for t, ts in zip(p.tensors, spec.tensors):
        n = len(t.chunks)
        indices = (
            np.sort(
                np.stack([rng.choice(ts.layout.chunk_numel, ts.k, replace=False) for _ in range(n)]), axis=1
            )
            if n
            else t.indices
        )
        tensors.append(
            TensorPayload(t.chunks, indices.astype(np.int64), rng.choice([-1.0, 1.0], t.values.shape))
        )
    return _reencode(spec, p, tensors)


def restamp(spec: ParamSpec, payload: bytes, step: int, round: int) -> bytes:
    """An old payload presented as one for `step` in `round`."""
    p = decode(spec, payload)
    return encode(spec, step, p.tensors, round=round, origin=p.origin)


def malformed(payload: bytes) -> bytes:
    return b"\xff" * max(8, len(payload) // 2)
