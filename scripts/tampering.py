"""What a cheating member does to a payload, as pure functions on its bytes (the simulator's
adversaries and the validation tests and benchmark use them):
- noise: random indices and signs, the honest payload's size (costs nothing to make);
- flip: the honest payload with every sign flipped; flip_share: a share of its signs flipped;
- restamp: a payload presented for another step and round (a stale one, or an honest one moved);
- claim: another member's payload restamped as one's own;
- malformed: bytes that do not decode.
"""

from __future__ import annotations

import numpy as np

from optim.codec import Payload, TensorPayload, decode, encode
from optim.spec import ParamSpec

STALE_ROUNDS = 3
OTHER_DATA_OFFSET = 1_000_000  # batch ids this far past the assigned ones


def _reencode(spec: ParamSpec, p: Payload, tensors: list[TensorPayload], step: int | None = None) -> bytes:
    """Other tensors under the honest payload's stamp (origin and round): only replay can tell."""
    return encode(spec, p.step if step is None else step, tensors, round=p.round, origin=p.origin)


def flip(spec: ParamSpec, payload: bytes) -> bytes:
    p = decode(spec, payload)
    return _reencode(spec, p, [TensorPayload(t.groups, t.indices, -t.values) for t in p.tensors])


def noise(spec: ParamSpec, payload: bytes, seed: int) -> bytes:
    p, rng = decode(spec, payload), np.random.default_rng(seed)
    tensors = []
    for t, ts in zip(p.tensors, spec.tensors):
        n = len(t.groups)
        indices = (
            np.sort(np.stack([rng.choice(ts.units, ts.k, replace=False) for _ in range(n)]), axis=1)
            if n
            else t.indices
        )
        tensors.append(
            TensorPayload(t.groups, indices.astype(np.int64), rng.choice([-1.0, 1.0], t.values.shape))
        )
    return _reencode(spec, p, tensors)


def restamp(spec: ParamSpec, payload: bytes, step: int, round: int) -> bytes:
    """An old payload presented as one for `step` in `round`."""
    p = decode(spec, payload)
    return encode(spec, step, p.tensors, round=round, origin=p.origin)


def flip_share(spec: ParamSpec, payload: bytes, share: float, seed: int) -> bytes:
    """The payload with `share` of its sent values' signs flipped (at least one)."""
    p, rng = decode(spec, payload), np.random.default_rng(seed)
    total = sum(t.values.size for t in p.tensors)
    chosen = set(rng.choice(total, max(1, round(share * total)), replace=False).tolist())
    tensors, offset = [], 0
    for t in p.tensors:
        flat = t.values.reshape(-1).copy()
        for i in range(flat.size):
            if offset + i in chosen:
                flat[i] = -flat[i]
        offset += flat.size
        tensors.append(TensorPayload(t.groups, t.indices, flat.reshape(t.values.shape)))
    return _reencode(spec, p, tensors)


def claim(spec: ParamSpec, payload: bytes, origin: bytes) -> bytes:
    """Another member's payload stamped with `origin` as the sender."""
    p = decode(spec, payload)
    return encode(spec, p.step, p.tensors, round=p.round, origin=origin)


def malformed(payload: bytes) -> bytes:
    return b"\xff" * max(8, len(payload) // 2)
