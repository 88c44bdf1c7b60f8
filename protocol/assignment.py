"""Who trains which batches in a round: pure functions of the round seed and the member list,
so any party can recompute what the coordinator published (who checks whom: protocol/checks.py)."""

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np


def round_batch_ids(round_number: int, global_batch: int) -> list[int]:
    """Round r trains batch ids [r * G, (r + 1) * G): the data advances by one global batch per round."""
    return list(range(round_number * global_batch, (round_number + 1) * global_batch))


def _shares(n: int, members: Sequence[Hashable], weights: Mapping | None) -> list[int]:
    """How many of n batches each member (in the given order) gets: equal, or proportional to
    `weights` by largest remainder (ties to the earlier member)."""
    if weights is None:
        return [len(s) for s in np.array_split(np.arange(n), len(members))]
    w = [float(weights[m]) for m in members]
    if any(not math.isfinite(x) or x <= 0 for x in w):
        raise ValueError("weights must be positive and finite")
    exact = [n * x / sum(w) for x in w]
    counts = [math.floor(e) for e in exact]
    by_remainder = sorted(range(len(members)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts


def assign_batches(
    seed: int, members: Sequence[Hashable], batch_ids: Sequence[int], weights: Mapping | None = None
) -> dict:
    """Shuffle the batch ids with the round seed and deal contiguous shares to the members in
    sorted order: equal shares (the first len(batch_ids) % len(members) get one more), or shares
    proportional to `weights` (measured throughput) so a slow member does not hold the round.
    Every batch id goes to exactly one member; a member may get none."""
    if not members:
        raise ValueError("no members to assign batches to")
    if len(set(members)) != len(members):
        raise ValueError("member ids must be unique")
    order = sorted(members)
    shuffled = np.random.default_rng(seed).permutation(np.asarray(batch_ids, dtype=np.int64))
    out, start = {}, 0
    for member, count in zip(order, _shares(len(shuffled), order, weights)):
        out[member] = sorted(int(b) for b in shuffled[start : start + count])
        start += count
    return out
