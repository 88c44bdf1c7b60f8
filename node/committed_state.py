"""What a member serves of the optimizer state it commits to, and what a validator fetches of a
target's.

Sampled (exact validation, no local steps): a state is served as its index and one leaf per DCT
chunk (optim/state_chunks.py); a commit names the index's hash, and a validator fetches the index
and the leaves the round's revealed secret draws. Whole (local steps, whose inner steps need all
of the inner state, or band validation, whose drift needs the values): the state is one blob and
a commit names its hash.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from optim.demo import DemoOptimizer
from optim.local import LocalSteps
from optim.state import load_state, reset_state, state_bytes
from optim.state_chunks import index_bytes, index_limit, leaf_hashes, leaf_size, load_leaves, locate
from protocol.run_config import RunConfig

Fetch = Callable[[bytes, int], bytes]  # (sha256, size limit) -> the blob, hash checked


def sampled(config: RunConfig) -> bool:
    """Whether this run's validators check a sample of each state rather than all of it."""
    v = config.validation
    return v.exact and v.sample_chunks > 0 and config.optim.inner_config() is None


@dataclass
class HeldState:
    digest: bytes  # what a commit names: the index's hash, or the whole state's
    served: list[bytes]  # the blobs provided for it
    whole: bytes | None = None  # the whole state (whole mode)
    leaves: dict[int, bytes] | None = None  # leaf number -> its bytes (sampled mode)


def serve(host, opt: DemoOptimizer, local: LocalSteps | None, by_leaf: bool) -> HeldState:
    """Provide the optimizer's current state to peers; what was provided."""
    if not by_leaf:
        whole = state_bytes(opt, local)
        digest = host.provide(whole)
        return HeldState(digest, [digest], whole=whole)
    index, blobs = index_bytes(opt)
    served = [host.provide(index), *(host.provide(leaf) for leaf in blobs.values())]
    hashes = leaf_hashes(opt, index)
    return HeldState(served[0], served, leaves={j: blobs[h] for j, h in enumerate(hashes)})


def restore(held: HeldState | None, opt: DemoOptimizer, local: LocalSteps | None) -> None:
    """Put a held state (None: fresh) back into the optimizer."""
    if held is None:
        reset_state(opt, local)
    elif held.whole is not None:
        load_state(opt, held.whole, local)
    else:
        load_leaves(opt, held.leaves)


def forget(host, held: HeldState) -> None:
    for digest in held.served:
        host.blobs.forget(digest)


def fetch_index(fetch: Fetch, opt: DemoOptimizer, digest: bytes) -> list[bytes]:
    """A target's state index by its hash: its leaf hashes (StateError if it is not one)."""
    return leaf_hashes(opt, fetch(digest, index_limit(opt)))


def fetch_leaves(fetch: Fetch, opt: DemoOptimizer, hashes: list[bytes], drawn: list[int]) -> dict[int, bytes]:
    """The drawn leaves of a target's state, each by the hash its index gives."""
    return {j: fetch(hashes[j], leaf_size(opt, locate(opt, j)[0])) for j in drawn}
