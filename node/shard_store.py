"""The token shards of a manifest on this disk: each checked against the manifest before its
first use (sha256, token count, ids within the model's vocabulary, the loss mask), fetched from
data providers when missing, and kept under a size bound, least recently used first out.

A shard on disk that is not the manifest's is a ShardError naming it; a shard no provider could
send is ShardUnavailable (the node skips that work; it never blames another member for it).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from p2p.blobs import file_sha256
from protocol.manifest import Manifest, ManifestError, Shard

log = logging.getLogger("eranos.node.shards")

# fetch(sha256 hex, size limit, destination): put the blob with that hash at the destination
Fetcher = Callable[[str, int, Path], None]


class ShardError(ManifestError):
    """A shard on disk is not the one the manifest describes."""


class ShardUnavailable(ShardError):
    """A shard is not on this disk and no data provider sent it."""


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


@dataclass
class Resident:
    tokens: np.ndarray
    mask: np.ndarray | None


@dataclass(frozen=True)
class Cache:
    """Where missing shards come from, and how much of them this disk keeps."""

    fetch: Fetcher
    max_bytes: int | None = None
    on_change: Callable[[Path, str, bool], None] | None = None  # (file, sha256, here / deleted)


@dataclass
class StoreStats:
    fetched: int = 0
    fetched_bytes: int = 0
    evicted: int = 0
    unavailable: int = 0


class ShardStore:
    def __init__(
        self,
        directory: Path,
        manifest: Manifest,
        vocab_size: int,
        cache: Cache | None = None,  # None: every shard is here, none fetched or deleted
    ) -> None:
        if manifest.vocab_size > vocab_size:
            raise ShardError(
                f"the corpus was tokenized for a vocabulary of {manifest.vocab_size}, "
                f"the model has {vocab_size}"
            )
        self.directory, self.manifest, self.vocab_size = directory, manifest, vocab_size
        self.cache = cache
        self.starts = np.concatenate([[0], np.cumsum([s.tokens for s in manifest.shards])])
        self.stats = StoreStats()
        self.pinned: set[int] = set()  # never evicted (the validation split's shards)
        self._open: dict[int, Resident] = {}
        # a cache: the shards' bytes on disk, least recently used first, counting what an earlier
        # process left here
        self._on_disk: OrderedDict[int, int] = OrderedDict()
        self.cached_bytes = 0  # the sum of _on_disk's sizes
        if cache is not None:
            for i, sh in enumerate(manifest.shards):
                if (directory / sh.name).is_file():
                    self._count(i)
        self._lock = threading.Lock()
        self._loading = [threading.Lock() for _ in manifest.shards]
        self._wanted: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._prefetcher: threading.Thread | None = None

    @property
    def masked(self) -> bool:
        return self.manifest.masked

    def shard(self, i: int, keep: Iterable[int] = ()) -> Resident:
        """Shard i, checked, fetched first if it is not here; `keep` are not evicted to make room."""
        with self._loading[i]:  # one fetch of a shard at a time, others' fetches beside it
            resident = self._open.get(i)
            loaded = resident is None
            if loaded:
                resident = self._load(i)
                with self._lock:
                    self._open[i] = resident
        if self.cache is not None:
            with self._lock:
                if loaded:  # only a shard just checked (and perhaps fetched) can grow the cache
                    self._count(i)
                    self._evict(keep={i, *keep})
                if i in self._on_disk:
                    self._on_disk.move_to_end(i)
        return resident

    def read(self, start: int, end: int, mask: bool = False) -> np.ndarray:
        """Tokens (or loss mask bytes) [start, end) of the manifest's stream, across shards."""
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        last = int(np.searchsorted(self.starts, end, side="left")) - 1
        parts = []
        for i in range(first, last + 1):
            r = self.shard(i, keep=range(first, last + 1))
            a, b = max(start, self.starts[i]) - self.starts[i], min(end, self.starts[i + 1]) - self.starts[i]
            if mask:
                parts.append(r.mask[a:b] if r.mask is not None else np.ones(b - a, np.uint8))
            else:
                parts.append(r.tokens[a:b])
        return np.concatenate(parts)

    def check_all(self) -> None:
        """Check every shard now (a data provider at start), keeping none resident beyond the bound."""
        for i in range(len(self.manifest.shards)):
            self.shard(i)

    def prefetch(self, shards: Iterable[int]) -> None:
        """Fetch and check these shards in the background; a failure is logged, the caller's own
        read of the shard raises it."""
        if self._prefetcher is None:
            self._prefetcher = threading.Thread(target=self._prefetch_loop, name="prefetch", daemon=True)
            self._prefetcher.start()
        with self._lock:  # the prefetch thread adds to _open meanwhile
            missing = sorted(set(shards) - set(self._open))
        for i in missing:
            self._wanted.put(i)

    def _prefetch_loop(self) -> None:
        while True:
            i = self._wanted.get()
            try:
                self.shard(i)
            except (ShardError, OSError) as exc:  # the training's own read says it again
                log.info("prefetch of shard %s failed: %s", self.manifest.shards[i].name, exc)

    def _load(self, i: int) -> Resident:
        s = self.manifest.shards[i]
        path, mask_path = self.directory / s.name, self.directory / s.mask_name
        self._ensure(path, s.sha256, s.tokens * _itemsize(self.manifest) + 4096, s)
        if s.mask_sha256:
            self._ensure(mask_path, s.mask_sha256, s.tokens, s)
        tokens = read_tokens(path, self.manifest.dtype)
        if len(tokens) != s.tokens:
            raise ShardError(f"shard {s.name} holds {len(tokens)} tokens, the manifest says {s.tokens}")
        top = int(tokens.max())
        if top >= self.vocab_size:
            raise ShardError(
                f"shard {s.name} holds token id {top}, beyond the model's vocabulary of {self.vocab_size}"
            )
        mask = None
        if s.mask_sha256:
            mask = np.fromfile(mask_path, dtype=np.uint8)
            if len(mask) != len(tokens) or mask.max(initial=0) > 1:
                raise ShardError(f"the loss mask of shard {s.name} must be one 0/1 byte per token")
        return Resident(tokens, mask)

    def _count(self, i: int) -> None:
        """Take shard i's bytes on disk into the cache's size, as they are now."""
        s = self.manifest.shards[i]
        files = (s.name, s.mask_name) if s.mask_sha256 else (s.name,)
        size = sum((self.directory / f).stat().st_size for f in files if (self.directory / f).is_file())
        self.cached_bytes += size - self._on_disk.get(i, 0)
        self._on_disk[i] = size

    def _ensure(self, path: Path, sha256: str, limit: int, s: Shard) -> None:
        """Make the file with this hash be at `path`: checked if here, else fetched and checked."""
        here = path.is_file()
        if here and hex_sha256(path) == sha256:
            self._announce(path, sha256, True)
            return
        what = "shard" if path.name == s.name else "the loss mask of shard"
        if self.cache is None:
            if here:
                raise ShardError(f"{what} {s.name} does not match the manifest's sha256")
            raise ShardError(f"{what} {s.name} is missing from {self.directory}")
        try:
            self.cache.fetch(sha256, limit, path)
        except Exception as exc:  # the fetcher's errors are the network's: the shard is not here
            self.stats.unavailable += 1
            raise ShardUnavailable(f"no data provider sent {path.name}: {exc}") from None
        if not path.is_file() or hex_sha256(path) != sha256:
            path.unlink(missing_ok=True)
            self.stats.unavailable += 1
            raise ShardUnavailable(f"what came for {path.name} is not the manifest's {what}")
        self.stats.fetched += 1
        self.stats.fetched_bytes += path.stat().st_size
        self._announce(path, sha256, True)

    def _evict(self, keep: set[int]) -> None:
        """Delete the least recently used shards until the cache is within its bound (never one
        being loaded, kept by the caller, or pinned)."""
        if self.cache is None or self.cache.max_bytes is None:
            return
        for i in list(self._on_disk):
            if self.cached_bytes <= self.cache.max_bytes:
                return
            if i in keep or i in self.pinned or not self._loading[i].acquire(blocking=False):
                continue
            try:
                self._delete(i)
            finally:
                self._loading[i].release()

    def _delete(self, i: int) -> None:
        self.cached_bytes -= self._on_disk.pop(i)
        self._open.pop(i, None)
        s = self.manifest.shards[i]
        files = [(s.name, s.sha256)] + ([(s.mask_name, s.mask_sha256)] if s.mask_sha256 else [])
        for name, sha256 in files:
            self._announce(self.directory / name, sha256, False)
            (self.directory / name).unlink(missing_ok=True)
        self.stats.evicted += 1

    def _announce(self, path: Path, sha256: str, here: bool) -> None:
        if self.cache is not None and self.cache.on_change is not None:
            self.cache.on_change(path, sha256, here)


def _itemsize(manifest: Manifest) -> int:
    return 2 if manifest.dtype == "uint16" else 4
