"""A node's optimizer state as bytes: what a validator needs to replay the node's round.

The state is everything `DemoOptimizer.compress` reads besides the gradient: the DCT-domain
momentum and, with Adam preconditioning, the second moment. Layout (little-endian):

    magic "EROS" | version u8 | spec sha256 (32 bytes) | every momentum tensor (fp32, spec order)
    | every second-moment tensor (fp32, spec order; none without Adam preconditioning)

Every length follows from the spec, so `load_state` checks the exact size before reading and
refuses non-finite values and a negative second moment: a state comes from another node and is
hostile until checked. The step is not part of the state; it comes from the round.
"""

import numpy as np
import torch

from optim.demo import DemoOptimizer
from optim.errors import PayloadError

MAGIC = b"EROS"
VERSION = 1
HEADER = len(MAGIC) + 1 + 32


class StateError(PayloadError):
    """An optimizer state from a peer is unusable: wrong size, header, spec or values."""


def _tensors(opt: DemoOptimizer) -> list[torch.Tensor]:
    return [*opt.momentum, *opt.second_moment]


def state_size(opt: DemoOptimizer) -> int:
    return HEADER + 4 * sum(t.numel() for t in _tensors(opt))


def state_bytes(opt: DemoOptimizer) -> bytes:
    parts = [MAGIC, bytes([VERSION]), opt.spec.digest]
    parts += [
        t.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4").tobytes()
        for t in _tensors(opt)
    ]
    return b"".join(parts)


def is_fresh(opt: DemoOptimizer) -> bool:
    return not any(t.any() for t in _tensors(opt))


def reset_state(opt: DemoOptimizer) -> None:
    for t in _tensors(opt):
        t.zero_()


def _body(opt: DemoOptimizer, data: bytes) -> np.ndarray:
    """The state's values, after checking everything about `data` but its values."""
    if len(data) != state_size(opt):
        raise StateError(f"state of {len(data)} bytes, expected {state_size(opt)}")
    if data[: len(MAGIC)] != MAGIC or data[len(MAGIC)] != VERSION:
        raise StateError("not an optimizer state of a known version")
    if data[len(MAGIC) + 1 : HEADER] != opt.spec.digest:
        raise StateError("optimizer state for another parameter spec")
    return np.frombuffer(data, dtype="<f4", offset=HEADER)


def load_state(opt: DemoOptimizer, data: bytes) -> None:
    """Replace `opt`'s state by `data`; on StateError `opt` is unchanged."""
    body = _body(opt, data)
    if not np.isfinite(body).all():
        raise StateError("optimizer state holds non-finite values")
    momentum = sum(t.numel() for t in opt.momentum)
    if (body[momentum:] < 0).any():  # a mean of squares: negative values would make sqrt NaN
        raise StateError("optimizer state holds a negative second moment")
    offset = 0
    for t in _tensors(opt):
        n = t.numel()
        t.copy_(torch.from_numpy(body[offset : offset + n].copy()).view(t.shape))
        offset += n


def state_drift(opt: DemoOptimizer, replayed: bytes, claimed: bytes) -> float:
    """Relative L2 distance of a claimed state from the replayed one (0.0: identical)."""
    a, b = _body(opt, replayed).astype(np.float64), _body(opt, claimed).astype(np.float64)
    if not np.isfinite(b).all():
        return float("inf")
    scale = max(float(np.linalg.norm(a)), 1e-30)
    return float(np.linalg.norm(a - b)) / scale
