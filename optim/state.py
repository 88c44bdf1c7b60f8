"""A node's optimizer state as bytes: what a validator needs to replay the node's round.

The state is everything `DemoOptimizer.compress` reads besides the gradient: the DCT-domain
momentum and, with Adam preconditioning, the second moment. Layout (little-endian):

    magic "EROS" | version u8 | spec sha256 (32 bytes) | every momentum tensor (fp32, spec order)
    | every second-moment tensor (fp32, spec order; none without Adam preconditioning)
    | with local steps (version 2): each parameter's inner AdamW step, exp_avg, exp_avg_sq (fp32)

A state is written to, hashed from, compared with and loaded from a file a slice of a tensor
at a time (it is 12 bytes a parameter with local steps: 12 GB at 1B parameters), never held
whole as bytes.
Every length follows from the spec, so `load_state` checks the exact size before reading and
refuses non-finite values and negative second moments or steps: a state comes from another node
and is hostile until checked. The outer step is not part of the state; it comes from the round.
"""

import hashlib
import io
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import torch

from optim.demo import DemoOptimizer
from optim.errors import PayloadError
from optim.local import LocalSteps

MAGIC = b"EROS"
SLICE = 1 << 22  # values read or written at once (16 MB)
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


def _slices(opt: DemoOptimizer, local: LocalSteps | None) -> Iterator[tuple[torch.Tensor, bool]]:
    """Every state tensor in wire order, flat, in slices of at most SLICE values."""
    for t, non_negative in _tensors(opt, local):
        for piece in t.detach().view(-1).split(SLICE):
            yield piece, non_negative


def _pieces(opt: DemoOptimizer, local: LocalSteps | None) -> Iterator[bytes]:
    yield MAGIC + bytes([_version(local)]) + opt.spec.digest
    for t, _ in _slices(opt, local):
        yield t.to("cpu", torch.float32).numpy().astype("<f4").tobytes()


def write_state(opt: DemoOptimizer, out: BinaryIO | None, local: LocalSteps | None = None) -> bytes:
    """Write the state to `out` (None: nowhere), one tensor at a time; its sha256."""
    h = hashlib.sha256()
    for piece in _pieces(opt, local):
        h.update(piece)
        if out is not None:
            out.write(piece)
    return h.digest()


def state_bytes(opt: DemoOptimizer, local: LocalSteps | None = None) -> bytes:
    """The whole state in memory: for small models (tests, benchmarks, fuzzing)."""
    out = io.BytesIO()
    write_state(opt, out, local)
    return out.getvalue()


def is_fresh(opt: DemoOptimizer, local: LocalSteps | None = None) -> bool:
    return not any(t.any() for t, _ in _tensors(opt, local))


def reset_state(opt: DemoOptimizer, local: LocalSteps | None = None) -> None:
    for t, _ in _tensors(opt, local):
        t.zero_()


Source = bytes | BinaryIO  # a state in memory, or a seekable file of one


def _opened(source: Source) -> BinaryIO:
    return io.BytesIO(source) if isinstance(source, bytes | bytearray) else source


def _check_header(opt: DemoOptimizer, f: BinaryIO, local: LocalSteps | None) -> None:
    """Everything about the state in `f` but its values; `f` is left at the first value."""
    size = f.seek(0, io.SEEK_END)
    f.seek(0)
    head = f.read(HEADER)
    if head[: len(MAGIC)] != MAGIC or len(head) < HEADER or head[len(MAGIC)] not in (VERSION, VERSION_LOCAL):
        raise StateError("not an optimizer state of a known version")
    if head[len(MAGIC)] != _version(local):
        raise StateError("optimizer state with local steps' inner state where none is expected, or without")
    if size != state_size(opt, local):
        raise StateError(f"state of {size} bytes, expected {state_size(opt, local)}")
    if head[len(MAGIC) + 1 :] != opt.spec.digest:
        raise StateError("optimizer state for another parameter spec")


Values = Iterator[tuple[torch.Tensor, bool, np.ndarray]]


def _values(f: BinaryIO, opt: DemoOptimizer, local: LocalSteps | None) -> Values:
    """Each slice of `opt`'s state tensors with the values `f` holds for it, read in turn."""
    for t, non_negative in _slices(opt, local):
        yield t, non_negative, np.frombuffer(f.read(4 * t.numel()), dtype="<f4")


def load_state(opt: DemoOptimizer, source: Source, local: LocalSteps | None = None) -> None:
    """Replace the state of `opt` (and `local`'s) by `source`'s; on StateError both are
    unchanged (every value is checked in a first pass over the file, then loaded in a second)."""
    f = _opened(source)
    _check_header(opt, f, local)
    for _, non_negative, piece in _values(f, opt, local):
        if not np.isfinite(piece).all():
            raise StateError("optimizer state holds non-finite values")
        if non_negative and (piece < 0).any():  # a mean of squares or a step count
            raise StateError("optimizer state holds a negative second moment or step")
    f.seek(HEADER)
    for t, _, piece in _values(f, opt, local):
        t.copy_(torch.from_numpy(piece.copy()))


def state_drift(opt: DemoOptimizer, claimed: Source, local: LocalSteps | None = None) -> float:
    """Relative L2 distance of a claimed state from the one `opt` (and `local`) hold now, the
    replay's (0.0: identical; inf for a claimed state with non-finite values)."""
    f = _opened(claimed)
    _check_header(opt, f, local)
    diff = norm = 0.0
    for t, _, piece in _values(f, opt, local):
        b = piece.astype(np.float64)
        if not np.isfinite(b).all():
            return float("inf")
        a = t.to("cpu", torch.float64).numpy()
        diff += float(np.square(a - b).sum())
        norm += float(np.square(a).sum())
    return float(np.sqrt(diff)) / max(float(np.sqrt(norm)), 1e-30)
