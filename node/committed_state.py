"""What a member serves of the optimizer state it commits to, and what a validator fetches of a
target's.

Sampled (exact validation, no local steps): a state is served as a Merkle tree (root, pages, one
leaf per DCT chunk: optim/state_chunks.py); a commit names the root's hash, and a validator
fetches the root, the pages and the leaves the round's revealed secret draws. Whole (local
steps, whose inner steps need all of the inner state, or band validation, whose drift needs the
values): the state is one blob and a commit names its hash; a validator fetches it to a file.
Either way a state is written to a file one tensor at a time and served from it: it is never
held whole as bytes.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from optim.demo import DemoOptimizer
from optim.local import LocalSteps
from optim.state import load_state, reset_state, state_size, write_state
from optim.state_chunks import (
    drawn_hashes,
    leaf_size,
    load_leaves,
    locate,
    make_index,
    root_limit,
    tensor_leaves,
)
from p2p.blobs import BlobStore
from protocol.run_config import RunConfig

Fetch = Callable[[bytes, int], bytes]  # (sha256, size limit) -> the blob, hash checked
IO_THREADS = min(8, os.cpu_count() or 1)
_files = itertools.count()
_io = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="state-io")


def sampled(config: RunConfig) -> bool:
    """Whether this run's validators check a sample of each state rather than all of it: only
    where compress is chunk-local (no local steps; top-k over whole tensors with 1-bit values,
    whose sampled chunks are checked against the payload's own selection: node/validation.py)."""
    v, optim = config.validation, config.optim
    chunk_local = optim.select == "chunk" or optim.values == "sign"
    return v.exact and v.sample_chunks > 0 and optim.inner_config() is None and chunk_local


@dataclass
class HeldState:
    digest: bytes  # what a commit names: the index's hash, or the whole state's
    served: list[bytes]  # the blobs provided for it
    path: Path  # the file of the state (whole mode) or of its leaves (sampled mode)
    spans: list[tuple[int, int]] = field(default_factory=list)  # each leaf's (offset, length) there


def state_file(directory: Path, kind: str) -> Path:
    """A new file for a state, named for this process (`clear_orphans` knows it by that)."""
    return directory / f"{kind}-{os.getpid()}-{next(_files)}.state"


def clear_orphans(directory: Path) -> int:
    """Delete the state files processes that are gone left in `directory` (a node killed or
    crashed mid-run; each file can be gigabytes); how many. A live process's are kept."""
    gone = 0
    for path in directory.glob("*-*-*.state") if directory.is_dir() else ():
        pid = path.name.split("-")[1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            path.unlink(missing_ok=True)
            gone += 1
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def serve(
    blobs: BlobStore, opt: DemoOptimizer, local: LocalSteps | None, directory: Path, by_leaf: bool
) -> HeldState:
    """Provide the optimizer's current state to peers from a file under `directory`: as leaves
    (`by_leaf`), or whole; what was provided."""
    directory.mkdir(parents=True, exist_ok=True)
    path = state_file(directory, "leaves" if by_leaf else "whole")
    if not by_leaf:
        with open(path, "wb") as f:
            digest = write_state(opt, f, local)
        blobs.add_range(path, 0, state_size(opt, local), digest)
        return HeldState(digest, [digest], path)
    try:
        hashes, spans = _write_leaves(opt, path)
    except BaseException:
        path.unlink(missing_ok=True)  # a state half written (a full disk) is never served or kept
        raise
    for digest, (offset, length) in zip(hashes, spans):
        blobs.add_range(path, offset, length, digest)
    root, pages = make_index(opt, hashes)
    served = [blobs.add_bytes(root), *(blobs.add_bytes(page) for page in pages), *hashes]
    return HeldState(served[0], served, path, spans)


def _write_leaves(opt: DemoOptimizer, path: Path) -> tuple[list[bytes], list[tuple[int, int]]]:
    """Write every leaf to `path`, a tensor at a time; each leaf's sha256 and (offset, length).

    A node does this every round between its compress and its commit, so the writing and
    hashing (which release the GIL) run on IO_THREADS threads, a tensor each, at most that
    many tensors' leaves in memory at once."""
    hashes: list[bytes] = []
    spans: list[tuple[int, int]] = []
    pending: deque[Future[list[bytes]]] = deque()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        at = 0
        for i in range(len(opt.spec.tensors)):
            if len(pending) == IO_THREADS:
                hashes.extend(pending.popleft().result())
            leaves = tensor_leaves(opt, i)
            pending.append(_io.submit(_write_and_hash, fd, leaves, at))
            spans.extend((at + j * leaves[0].nbytes, leaves[0].nbytes) for j in range(len(leaves)))
            at += leaves.nbytes
        while pending:
            hashes.extend(pending.popleft().result())
    finally:
        for job in pending:
            job.cancel()
        wait(pending)
        os.close(fd)
    return hashes, spans


def _write_and_hash(fd: int, leaves: np.ndarray, at: int) -> list[bytes]:
    view = memoryview(leaves).cast("B")
    while view:
        written = os.pwrite(fd, view, at)
        view, at = view[written:], at + written
    return [hashlib.sha256(row).digest() for row in leaves]


def restore(held: HeldState | None, opt: DemoOptimizer, local: LocalSteps | None) -> None:
    """Put a held state (None: fresh) back into the optimizer from its file."""
    if held is None:
        reset_state(opt, local)
        return
    with open(held.path, "rb") as f:
        if held.spans:
            load_leaves(opt, ((j, _read(f, offset, length)) for j, (offset, length) in enumerate(held.spans)))
        else:
            load_state(opt, f, local)


def _read(f, offset: int, length: int) -> bytes:
    f.seek(offset)
    return f.read(length)


def forget(blobs: BlobStore, held: HeldState) -> None:
    """Stop serving a state (and delete its file)."""
    for digest in held.served:
        blobs.forget(digest, held.path)
    held.path.unlink(missing_ok=True)


def fetch_sample(fetch: Fetch, opt: DemoOptimizer, digest: bytes, drawn: list[int]) -> dict[int, bytes]:
    """The hashes of the drawn leaves of a target's state, by its root's hash: the root, then
    the pages that hold them (StateError if they are not this spec's)."""
    return drawn_hashes(opt, fetch(digest, root_limit(opt)), fetch, drawn)


def fetch_leaves(fetch: Fetch, opt: DemoOptimizer, hashes: dict[int, bytes]) -> dict[int, bytes]:
    """The leaves with these hashes, each checked by the blob protocol."""
    return {j: fetch(h, leaf_size(opt, locate(opt, j)[0])) for j, h in hashes.items()}
