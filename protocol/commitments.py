"""The root over a round's accepted commitments that the coordinator records on chain.

A binary Merkle tree over leaves sha256(0x00 || member key || payload hash), sorted by member
key; inner nodes sha256(0x01 || left || right), an odd node is promoted unchanged. Domain
separation keeps a leaf from posing as an inner node. The empty round's root is sha256(b"").
"""

import hashlib
from collections.abc import Mapping


def _leaf(key: bytes, payload_hash: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + key + payload_hash).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def commitment_root(accepted: Mapping[bytes, bytes]) -> bytes:
    """Root over member key -> payload hash for the accepted contributions."""
    level = [_leaf(key, accepted[key]) for key in sorted(accepted)]
    if not level:
        return hashlib.sha256(b"").digest()
    while len(level) > 1:
        pairs = [level[i : i + 2] for i in range(0, len(level), 2)]
        level = [_node(*p) if len(p) == 2 else p[0] for p in pairs]
    return level[0]


def inclusion_proof(accepted: Mapping[bytes, bytes], key: bytes) -> list[tuple[bool, bytes]]:
    """The siblings on `key`'s path to the root, each with whether it sits on the left: what a
    member checks its own commit against the root recorded on chain with (`verify_inclusion`)."""
    keys = sorted(accepted)
    index, level, proof = keys.index(key), [_leaf(k, accepted[k]) for k in keys], []
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append((sibling < index, level[sibling]))
        pairs = [level[i : i + 2] for i in range(0, len(level), 2)]
        level, index = [_node(*p) if len(p) == 2 else p[0] for p in pairs], index // 2
    return proof


def verify_inclusion(root: bytes, key: bytes, payload_hash: bytes, proof: list[tuple[bool, bytes]]) -> bool:
    node = _leaf(key, payload_hash)
    for left, sibling in proof:
        node = _node(sibling, node) if left else _node(node, sibling)
    return node == root
