"""Which member trains which batches in a round: a pure function every party can recompute."""

from collections.abc import Sequence

import numpy as np


def round_batch_ids(round_number: int, global_batch: int) -> list[int]:
    """Round r trains batch ids [r * G, (r + 1) * G): the data advances by one global batch per round."""
    return list(range(round_number * global_batch, (round_number + 1) * global_batch))


def assign_batches(seed: int, members: Sequence[str], batch_ids: Sequence[int]) -> dict[str, list[int]]:
    """Shuffle the batch ids with the round seed and deal contiguous shares to the members in
    sorted order; the first len(batch_ids) % len(members) members get one more. Every batch id
    goes to exactly one member."""
    if not members:
        raise ValueError("no members to assign batches to")
    if len(set(members)) != len(members):
        raise ValueError("member ids must be unique")
    shuffled = np.random.default_rng(seed).permutation(np.asarray(batch_ids, dtype=np.int64))
    shares = np.array_split(shuffled, len(members))
    return {member: sorted(int(b) for b in share) for member, share in zip(sorted(members), shares)}
