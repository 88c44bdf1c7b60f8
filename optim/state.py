"""A node's optimizer state as bytes: what a validator needs to replay the node's round.

The state is everything `DemoOptimizer.compress` reads besides the gradient: the DCT-domain
momentum and, with Adam preconditioning, the second moment. Layout (little-endian):

    magic "EROS" | version u8 | spec sha256 (32 bytes) | every momentum tensor (fp32, spec order)
    | every second-moment tensor (fp32, spec order; none without Adam preconditioning)
    | with local steps (version 2): each parameter's inner AdamW step, exp_avg, exp_avg_sq (fp32)

Every length follows from the spec, so `load_state` checks the exact size before reading and
refuses non-finite values and negative second moments or steps: a state comes from another node
and is hostile until checked. The outer step is not part of the state; it comes from the round.
"""

import numpy as np
import torch

from optim.demo import DemoOptimizer
from optim.errors import PayloadError
from optim.local import LocalSteps

MAGIC = b"EROS"
VERSION, VERSION_LOCAL = 1, 2  # without and with local steps' inner state
HEADER = len(MAGIC) + 1 + 32


class StateError(PayloadError):
    """An optimizer state from a peer is unusable: wrong size, header, spec or values."""


def _tensors(opt: DemoOptimizer, local: LocalSteps | None) -> list[tuple[torch.Tensor, bool]]:
    """Every state tensor in wire order, each with whether it must be non-negative."""
    own = [(m, False) for m in opt.momentum] + [(v, True) for v in opt.second_moment]
    return own + (local.state_tensors() if local is not None else [])


def state_size(opt: DemoOptimizer, local: LocalSteps | None = None) -> int:
    return HEADER + 4 * sum(t.numel() for t, _ in _tensors(opt, local))


def _version(local: LocalSteps | None) -> int:
    return VERSION if local is None else VERSION_LOCAL


def state_bytes(opt: DemoOptimizer, local: LocalSteps | None = None) -> bytes:
    parts = [MAGIC, bytes([_version(local)]), opt.spec.digest]
    parts += [
        t.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4").tobytes()
        for t, _ in _tensors(opt, local)
    ]
    return b"".join(parts)


def is_fresh(opt: DemoOptimizer, local: LocalSteps | None = None) -> bool:
    return not any(t.any() for t, _ in _tensors(opt, local))


def reset_state(opt: DemoOptimizer, local: LocalSteps | None = None) -> None:
    for t, _ in _tensors(opt, local):
        t.zero_()


def _body(opt: DemoOptimizer, data: bytes, local: LocalSteps | None) -> np.ndarray:
    """The state's values, after checking everything about `data` but its values."""
    if data[: len(MAGIC)] != MAGIC or len(data) < HEADER or data[len(MAGIC)] not in (VERSION, VERSION_LOCAL):
        raise StateError("not an optimizer state of a known version")
    if data[len(MAGIC)] != _version(local):
        raise StateError("optimizer state with local steps' inner state where none is expected, or without")
    if len(data) != state_size(opt, local):
        raise StateError(f"state of {len(data)} bytes, expected {state_size(opt, local)}")
    if data[len(MAGIC) + 1 : HEADER] != opt.spec.digest:
        raise StateError("optimizer state for another parameter spec")
    return np.frombuffer(data, dtype="<f4", offset=HEADER)


def load_state(opt: DemoOptimizer, data: bytes, local: LocalSteps | None = None) -> None:
    """Replace the state of `opt` (and `local`'s) by `data`; on StateError both are unchanged."""
    body = _body(opt, data, local)
    if not np.isfinite(body).all():
        raise StateError("optimizer state holds non-finite values")
    pieces, offset = [], 0
    for t, non_negative in _tensors(opt, local):
        piece = body[offset : offset + t.numel()]
        if non_negative and (piece < 0).any():  # a mean of squares or a step count
            raise StateError("optimizer state holds a negative second moment or step")
        pieces.append((t, piece))
        offset += t.numel()
    for t, piece in pieces:
        t.copy_(torch.from_numpy(piece.copy()).view(t.shape))


def state_drift(
    opt: DemoOptimizer, replayed: bytes, claimed: bytes, local: LocalSteps | None = None
) -> float:
    """Relative L2 distance of a claimed state from the replayed one (0.0: identical)."""
    a, b = _body(opt, replayed, local).astype(np.float64), _body(opt, claimed, local).astype(np.float64)
    if not np.isfinite(b).all():
        return float("inf")
    scale = max(float(np.linalg.norm(a)), 1e-30)
    return float(np.linalg.norm(a - b)) / scale
