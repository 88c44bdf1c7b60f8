"""Batches from token shards, dealt so that a round needs few shards: the pure function
`batch id -> sequences` of a manifest, which every party computes the same way.

The last `val_fraction` of the manifest's token stream is held out for validation. Each shard's
tokens before that point are cut into its own sequences of seq_len + 1 tokens (a sequence never
spans two shards). Epoch e visits the shards in an order shuffled by (seed, e) and each shard's
sequences in an order shuffled by (seed, e, shard); batch b of epoch e = b // batches_per_epoch
is the slice b % batches_per_epoch of that visit, `batch_seqs` sequences long. Consecutive batch
ids (a round's) so fall in one or two shards, which a node fetches a round ahead.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

import numpy as np

from node.shard_store import ShardStore


class ShardedDataset:
    def __init__(
        self, store: ShardStore, seq_len: int, batch_seqs: int, val_fraction: float = 0.02, seed: int = 0
    ) -> None:
        self.store, self.seq_len, self.batch_seqs, self.seed = store, seq_len, batch_seqs, seed
        total = int(store.starts[-1])
        self.val_start = total - max(seq_len + 1, int(total * val_fraction))
        usable = np.clip(self.val_start - store.starts[:-1], 0, np.diff(store.starts))
        self.seqs_per_shard = np.maximum(0, (usable - 1) // seq_len)
        self.n_train_seqs = int(self.seqs_per_shard.sum())
        self.batches_per_epoch = self.n_train_seqs // batch_seqs
        if self.batches_per_epoch < 1:
            raise ValueError(f"corpus of {total} tokens holds no batch of {batch_seqs} x {seq_len}")
        self.masked = store.masked
        first_val = int(np.searchsorted(store.starts, self.val_start, side="right")) - 1
        store.pinned = set(range(first_val, len(store.manifest.shards)))
        self._order = lru_cache(maxsize=2)(self._epoch_order)
        self._within = lru_cache(maxsize=64)(self._shard_order)

    def _epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """The shards epoch `epoch` visits, in order, and the cumulative sequence counts."""
        shards = np.flatnonzero(self.seqs_per_shard)
        order = np.random.default_rng([self.seed, epoch, 0]).permutation(shards)
        return order, np.cumsum(self.seqs_per_shard[order])

    def _shard_order(self, epoch: int, shard: int) -> np.ndarray:
        n = int(self.seqs_per_shard[shard])
        return np.random.default_rng([self.seed, epoch, 1, shard]).permutation(n)

    def _places(self, batch_id: int) -> list[tuple[int, int]]:
        """(shard, token offset in the stream) of each sequence of this batch."""
        epoch, at = divmod(batch_id, self.batches_per_epoch)
        order, ends = self._order(epoch)
        places = []
        for p in range(at * self.batch_seqs, (at + 1) * self.batch_seqs):
            k = int(np.searchsorted(ends, p, side="right"))
            shard = int(order[k])
            local = int(self._within(epoch, shard)[p - (ends[k - 1] if k else 0)])
            places.append((shard, int(self.store.starts[shard]) + local * self.seq_len))
        return places

    def shards_of(self, batch_ids: Iterable[int]) -> set[int]:
        return {shard for b in batch_ids for shard, _ in self._places(b)}

    def prefetch(self, batch_ids: Iterable[int]) -> None:
        """Fetch the shards these batches need in the background."""
        self.store.prefetch(self.shards_of(batch_ids))

    def _read(self, batch_id: int, mask: bool) -> np.ndarray:
        places = self._places(batch_id)
        keep = {shard for shard, _ in places}
        rows = []
        for shard, start in places:
            resident = self.store.shard(shard, keep)
            source = resident.mask if mask else resident.tokens
            local = start - int(self.store.starts[shard])
            end = local + self.seq_len + 1
            rows.append(np.ones(self.seq_len + 1) if source is None else source[local:end])
        return np.asarray(rows, dtype=np.int64)

    def batch(self, batch_id: int) -> np.ndarray:
        """The `batch_seqs` sequences of this batch id: (batch_seqs, seq_len + 1) int64."""
        return self._read(batch_id, mask=False)

    def batch_targets(self, batch_id: int) -> np.ndarray | None:
        """Which targets of this batch count in the loss, (batch_seqs, seq_len) bool; None: all."""
        if not self.masked:
            return None
        return self._read(batch_id, mask=True)[:, 1:].astype(bool)

    def val_batches(self, max_seqs: int) -> np.ndarray:
        """The first `max_seqs` validation sequences (fewer if the split is short)."""
        n = min(max_seqs, (int(self.store.starts[-1]) - self.val_start - 1) // self.seq_len)
        span = self.store.read(self.val_start, self.val_start + n * self.seq_len + 1)
        offsets = np.arange(n)[:, None] * self.seq_len + np.arange(self.seq_len + 1)
        return np.asarray(span[offsets], dtype=np.int64)
