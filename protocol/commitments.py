"""The root over a round's accepted commitments that the coordinator records on chain.

A binary Merkle tree over leaves sha256(0x00 || member key || payload hash), sorted by member
key; inner nodes sha256(0x01 || left || right), an odd node is promoted unchanged. Domain
separation keeps a leaf from posing as an inner node. The empty round's root is sha256(b"").
"""

import hashlib
from collections.abc import Mapping


def commitment_root(accepted: Mapping[bytes, bytes]) -> bytes:
    """Root over member key -> payload hash for the accepted contributions."""
    level = [hashlib.sha256(b"\x00" + key + accepted[key]).digest() for key in sorted(accepted)]
    if not level:
        return hashlib.sha256(b"").digest()
    while len(level) > 1:
        pairs = [level[i : i + 2] for i in range(0, len(level), 2)]
        level = [hashlib.sha256(b"\x01" + p[0] + p[1]).digest() if len(p) == 2 else p[0] for p in pairs]
    return level[0]
