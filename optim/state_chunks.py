"""The optimizer state cut into one leaf per DCT chunk, so a validator can check a sample of a
member's state instead of moving all of it (8 bytes per parameter with Adam preconditioning).

Compress is chunk-local: chunk c of tensor i takes its payload rows and its next state from its
own momentum, its own second moment (over the chunk's block of the parameter) and the gradient
(whose DCT is chunk-local; "rms" preconditioning and clipping read only the gradient, which the
validator recomputes whole). So a validator that loads the state of a few chunks, zeros the
rest and runs the ordinary compress reproduces those chunks' payload rows and next-state leaves
exactly.

    leaf (i, c)   the momentum of chunk c (fp32, chunk_numel values, row-major in the block),
                  then, with Adam preconditioning, the second moment over the chunk's block
                  (fp32, zero beyond the parameter's edge); leaves are numbered in spec order
    page j        the sha256 of leaves j * 1024 .. j * 1024 + 1023 (fewer in the last page)
    root          magic "ERSI" | version u8 | spec sha256 | leaf count u32 | sha256 of each page

A Merkle tree of arity 1024: the root's sha256 is what a commit names, and a validator fetches
the root, the pages of the leaves it samples (the proofs), then the leaves, each by the hash its
parent gives, so anything but the committed bytes is refused by the blob protocol's hash check.
At 1B parameters (270k leaves) a check moves 8 KB of root and at most 64 pages of 32 KB. The sample is
drawn from a secret revealed after commits close (`sample`): a member cannot know which of its
chunks will be checked when it commits. Local steps' inner state is not chunk-local (the inner
steps move every weight); runs with local steps replay from the whole state (optim/state.py).
Top-k over whole tensors (select "tensor") is chunk-local but for one number, its tensor's
threshold: node/validation.py checks its sampled chunks against the payload's own selection.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import lru_cache

import numpy as np
import torch

from optim.codec import TensorPayload
from optim.dct import ChunkLayout
from optim.demo import DemoOptimizer
from optim.spec import ParamSpec, TensorSpec
from optim.state import StateError

MAGIC, VERSION = b"ERSI", 2
_HEADER = struct.Struct("<4sB32sI")
PAGE = 1024  # leaf hashes per page


def _blocks(padded: torch.Tensor, lay: ChunkLayout) -> torch.Tensor:
    """(B, Hp, Wp) -> a (B, mh, sh, mw, sw) view: chunk (b, r, c) is [b, r, :, c, :]."""
    return padded.view(lay.lead, lay.grid_rows, lay.chunk_rows, lay.grid_cols, lay.chunk_cols)


def _padded(t: torch.Tensor, lay: ChunkLayout) -> torch.Tensor:
    t = t.reshape(lay.lead, lay.rows, lay.cols)
    pad_rows, pad_cols = lay.padded_shape[1] - lay.rows, lay.padded_shape[2] - lay.cols
    return torch.nn.functional.pad(t, (0, pad_cols, 0, pad_rows)) if pad_rows or pad_cols else t


def _copy_chunk_rows(padded: torch.Tensor, lay: ChunkLayout, rows: torch.Tensor) -> None:
    """Copy each chunk's values into a row of `rows` (n_chunks, chunk_numel), chunks in wire order."""
    grid = rows.view(lay.lead, lay.grid_rows, lay.grid_cols, lay.chunk_rows, lay.chunk_cols)
    grid.copy_(_blocks(padded, lay).permute(0, 1, 3, 2, 4))


def tensor_leaves(opt: DemoOptimizer, i: int) -> np.ndarray:
    """Tensor i's leaves as rows of little-endian fp32: (n_chunks, chunk_numel or 2 * chunk_numel),
    in host memory, each value copied once from the state (a state is written every round)."""
    lay = opt.spec.tensors[i].layout
    n = lay.chunk_numel
    rows = torch.empty((lay.n_chunks, n * (2 if opt.second_moment else 1)), dtype=torch.float32)
    _copy_chunk_rows(opt.momentum[i].detach().view(lay.padded_shape), lay, rows[:, :n])
    if opt.second_moment:
        _copy_chunk_rows(_padded(opt.second_moment[i].detach(), lay), lay, rows[:, n:])
    return rows.numpy().astype("<f4", copy=False)


def leaf_counts(opt: DemoOptimizer) -> list[int]:
    return [ts.layout.n_chunks for ts in opt.spec.tensors]


def leaf_size(opt: DemoOptimizer, i: int) -> int:
    """Bytes in each leaf of tensor i."""
    return 4 * opt.spec.tensors[i].layout.chunk_numel * (2 if opt.second_moment else 1)


@lru_cache(maxsize=16)
def _first_leaves(spec: ParamSpec) -> tuple[int, ...]:
    """The number of each tensor's first leaf, then the leaf count."""
    return tuple(itertools.accumulate((ts.layout.n_chunks for ts in spec.tensors), initial=0))


def locate(opt: DemoOptimizer, leaf: int) -> tuple[int, int]:
    """(tensor, chunk) of a leaf number."""
    firsts = _first_leaves(opt.spec)
    if not 0 <= leaf < firsts[-1]:
        raise IndexError(f"no leaf {leaf} in a state of {firsts[-1]}")
    i = bisect.bisect_right(firsts, leaf) - 1
    return i, leaf - firsts[i]


def iter_leaves(opt: DemoOptimizer) -> Iterator[bytes]:
    """Every leaf in order, one tensor's in memory at a time."""
    for i in range(len(opt.spec.tensors)):
        for row in tensor_leaves(opt, i):
            yield row.tobytes()


def make_index(opt: DemoOptimizer, hashes: list[bytes]) -> tuple[bytes, list[bytes]]:
    """The root and the pages over these leaf hashes."""
    pages = [b"".join(hashes[at : at + PAGE]) for at in range(0, len(hashes), PAGE)]
    header = _HEADER.pack(MAGIC, VERSION, opt.spec.digest, len(hashes))
    return header + b"".join(hashlib.sha256(p).digest() for p in pages), pages


def index_bytes(opt: DemoOptimizer) -> tuple[bytes, dict[bytes, bytes]]:
    """The state's root, and every page and leaf by its hash: what a member serves, in memory."""
    hashes, blobs = [], {}
    for data in iter_leaves(opt):
        hashes.append(hashlib.sha256(data).digest())
        blobs[hashes[-1]] = data
    root, pages = make_index(opt, hashes)
    blobs.update((hashlib.sha256(p).digest(), p) for p in pages)
    return root, blobs


def root_limit(opt: DemoOptimizer) -> int:
    """The exact size of this optimizer's root: the size limit of a fetch."""
    return _HEADER.size + 32 * -(-sum(leaf_counts(opt)) // PAGE)


def page_hashes(opt: DemoOptimizer, root: bytes) -> list[bytes]:
    """The page hashes of a peer's root, after checking it belongs to this optimizer's spec."""
    n = sum(leaf_counts(opt))
    if len(root) != root_limit(opt):
        raise StateError(f"state root of {len(root)} bytes, expected {root_limit(opt)}")
    magic, version, digest, count = _HEADER.unpack_from(root)
    if magic != MAGIC or version != VERSION or digest != opt.spec.digest or count != n:
        raise StateError("not a state root of this run's parameter spec")
    return [root[_HEADER.size + 32 * j : _HEADER.size + 32 * (j + 1)] for j in range(len(root) // 32 - 1)]


def drawn_hashes(
    opt: DemoOptimizer, root: bytes, fetch: Callable[[bytes, int], bytes], drawn: Iterable[int]
) -> dict[int, bytes]:
    """The hashes of the drawn leaves, from the pages that hold them (fetched by the hashes the
    root gives; `fetch(sha256, size limit)` checks each); StateError for a root or page that
    does not fit this spec."""
    pages, n, out = page_hashes(opt, root), sum(leaf_counts(opt)), {}
    wanted = sorted(set(drawn))
    for j in sorted({leaf // PAGE for leaf in wanted}):
        size = 32 * (min(n, (j + 1) * PAGE) - j * PAGE)
        page = fetch(pages[j], size)
        if len(page) != size:
            raise StateError(f"state page {j} of {len(page)} bytes, expected {size}")
        for leaf in (x for x in wanted if x // PAGE == j):
            at = 32 * (leaf - j * PAGE)
            out[leaf] = page[at : at + 32]
    return out


def read_leaf(opt: DemoOptimizer, leaf: int) -> bytes:
    i, c = locate(opt, leaf)
    lay = opt.spec.tensors[i].layout
    b, r, col = _chunk_at(lay, c)
    row = [_blocks(opt.momentum[i].view(lay.padded_shape), lay)[b, r, :, col, :].reshape(-1)]
    if opt.second_moment:
        row.append(_blocks(_padded(opt.second_moment[i], lay), lay)[b, r, :, col, :].reshape(-1))
    return torch.cat(row).detach().to("cpu", torch.float32).numpy().astype("<f4").tobytes()


def _chunk_at(lay: ChunkLayout, c: int) -> tuple[int, int, int]:
    """(lead, block row, block col) of chunk c."""
    b, rest = divmod(c, lay.grid_rows * lay.grid_cols)
    return (b, *divmod(rest, lay.grid_cols))


def load_leaves(opt: DemoOptimizer, leaves: Mapping[int, bytes] | Iterable[tuple[int, bytes]]) -> None:
    """Zero the state, then put these leaves (a mapping or (leaf, bytes) pairs, read one at a
    time) in their chunks; StateError, with the state zeroed, for a leaf of the wrong size, a
    non-finite value or a negative second moment."""
    for t in [*opt.momentum, *opt.second_moment]:
        t.zero_()
    try:
        for leaf, data in leaves.items() if isinstance(leaves, Mapping) else leaves:
            i, c = locate(opt, leaf)
            if len(data) != leaf_size(opt, i):
                raise StateError(f"state leaf {leaf} of {len(data)} bytes, expected {leaf_size(opt, i)}")
            values = np.frombuffer(data, dtype="<f4")
            if not np.isfinite(values).all() or (values[opt.spec.tensors[i].layout.chunk_numel :] < 0).any():
                raise StateError(f"state leaf {leaf} holds a non-finite value or a negative second moment")
            _put(opt, i, c, torch.from_numpy(values.copy()))
    except StateError:
        for t in [*opt.momentum, *opt.second_moment]:
            t.zero_()
        raise


def _put(opt: DemoOptimizer, i: int, c: int, values: torch.Tensor) -> None:
    lay = opt.spec.tensors[i].layout
    b, r, col = _chunk_at(lay, c)
    sh, sw, n = lay.chunk_rows, lay.chunk_cols, lay.chunk_numel
    m = _blocks(opt.momentum[i].view(lay.padded_shape), lay)
    m[b, r, :, col, :] = values[:n].view(sh, sw).to(m.dtype)
    if opt.second_moment:
        v = opt.second_moment[i].view(lay.lead, lay.rows, lay.cols)
        rows, cols = min(sh, lay.rows - r * sh), min(sw, lay.cols - col * sw)
        block = values[n:].view(sh, sw)[:rows, :cols]
        v[b, r * sh : r * sh + rows, col * sw : col * sw + cols] = block.to(v.dtype)


def sample(secret: bytes, target: bytes, round: int, n_leaves: int, count: int) -> list[int]:
    """The leaves every validator of `target` checks in `round`: `count` distinct leaves (all of
    them when count >= n_leaves), drawn from the revealed secret."""
    if count >= n_leaves:
        return list(range(n_leaves))
    seed = hashlib.sha256(b"state-sample" + secret + target + round.to_bytes(8, "little")).digest()
    rng = np.random.default_rng(int.from_bytes(seed, "little"))
    return sorted(int(j) for j in rng.choice(n_leaves, size=count, replace=False))


def chunk_block(opt: DemoOptimizer, i: int, c: int) -> torch.Tensor:
    """Chunk c of tensor i's momentum: an (sh, sw) view, row-major as its leaf."""
    lay = opt.spec.tensors[i].layout
    b, r, col = _chunk_at(lay, c)
    return _blocks(opt.momentum[i].view(lay.padded_shape), lay)[b, r, :, col, :]


def sent_in_chunk(tp: TensorPayload, ts: TensorSpec, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """(units within the chunk, their values: (units, width)) a payload that selects over its
    whole tensor sends from one chunk of it."""
    if not len(tp.groups):
        return np.zeros(0, np.int64), np.zeros((0, ts.width))
    n = ts.per_chunk
    here = tp.indices[0] // n == chunk
    return tp.indices[0][here] - chunk * n, tp.values[0].reshape(-1, ts.width)[here]


def chunk_rows(tp: TensorPayload, chunk: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The (indices, values) a payload sends for one chunk of its tensor; None if left out."""
    at = np.searchsorted(tp.groups, chunk)
    if at == len(tp.groups) or tp.groups[at] != chunk:
        return None
    return tp.indices[at], tp.values[at]
