"""A corpus read from token shards (protocol/manifest.py), every byte checked against the
manifest before training: a missing or altered shard, a wrong token count, or a token id at or
beyond the model's vocabulary is a ShardError at start that names the shard, never an
IndexError from the embedding in the middle of a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from node.data import Corpus
from p2p.blobs import file_sha256
from protocol.manifest import Manifest, ManifestError, Shard


class ShardError(ManifestError):
    """A shard on disk is not the one the manifest describes."""


def hex_sha256(path: Path) -> str:
    return file_sha256(path).hex()


def read_tokens(path: Path, dtype: str) -> np.ndarray:
    if path.suffix == ".npy":
        tokens = np.load(path, mmap_mode="r", allow_pickle=False)
        if tokens.ndim != 1 or tokens.dtype != np.dtype(dtype):
            raise ShardError(
                f"{path.name}: a 1-d {dtype} array expected, found {tokens.ndim}-d {tokens.dtype}"
            )
        return tokens
    return np.memmap(path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r")


def _checked(
    directory: Path, shard: Shard, manifest: Manifest, vocab_size: int
) -> tuple[np.ndarray, np.ndarray | None]:
    path = directory / shard.name
    if not path.is_file():
        raise ShardError(f"shard {shard.name} is missing from {directory}")
    if hex_sha256(path) != shard.sha256:
        raise ShardError(f"shard {shard.name} does not match the manifest's sha256")
    tokens = read_tokens(path, manifest.dtype)
    if len(tokens) != shard.tokens:
        raise ShardError(f"shard {shard.name} holds {len(tokens)} tokens, the manifest says {shard.tokens}")
    top = int(tokens.max())
    if top >= vocab_size:
        raise ShardError(
            f"shard {shard.name} holds token id {top}, beyond the model's vocabulary of {vocab_size}"
        )
    if not shard.mask_sha256:
        return tokens, None
    mask_path = directory / shard.mask_name
    if not mask_path.is_file() or hex_sha256(mask_path) != shard.mask_sha256:
        raise ShardError(f"the loss mask of shard {shard.name} is missing or does not match the manifest")
    mask = np.fromfile(mask_path, dtype=np.uint8)
    if len(mask) != len(tokens) or mask.max(initial=0) > 1:
        raise ShardError(f"the loss mask of shard {shard.name} must be one 0/1 byte per token")
    return tokens, mask


def shard_corpus(directory: Path, manifest: Manifest, vocab_size: int) -> tuple[Corpus, np.ndarray | None]:
    """The shards in manifest order as one token stream, and the loss mask over it (None if no
    shard has one; a shard without one counts every token)."""
    if manifest.vocab_size > vocab_size:
        raise ShardError(
            f"the corpus was tokenized for a vocabulary of {manifest.vocab_size}, the model has {vocab_size}"
        )
    parts = [_checked(directory, s, manifest, vocab_size) for s in manifest.shards]
    tokens = np.concatenate([np.asarray(t) for t, _ in parts])
    mask = None
    if manifest.masked:
        mask = np.concatenate([m if m is not None else np.ones(len(t), np.uint8) for t, m in parts])
    return Corpus(tokens, manifest.digest(), f"{len(manifest.shards)} shards in {directory}"), mask
