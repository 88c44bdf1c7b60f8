"""Blobs this node serves, and where fetched bytes go while they are being checked.

Small blobs (gradient payloads) live in memory; large ones (checkpoints, optimizer states) stay
on disk, whole files or byte ranges of one (an optimizer state's chunks), and are streamed in 1 MiB chunks
both ways, so memory use does not grow with the blob. A fetch writes
into a sink that is only turned into a result after the hash matched: a file is written to
`<dest>.part` and renamed on success, deleted on failure.

A digest provided n times is served until it is forgotten n times: two optimizer states held
at once share every leaf (and page) that did not change between them, and a round that changes
nothing leaves the model's hash as it was. Each file location goes with the forget that names
its file, since that file is about to be deleted.
"""

import hashlib
import os
import shutil
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import trio

CHUNK = 1 << 20


def file_sha256(path: Path) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.digest()


@dataclass(frozen=True)
class _OnDisk:
    path: Path
    offset: int = 0
    length: int | None = None  # None: to the end of the file

    def size(self) -> int:
        return self.length if self.length is not None else self.path.stat().st_size - self.offset


class BlobStore:
    def __init__(self) -> None:
        self._bytes: dict[bytes, bytes] = {}
        self._files: dict[bytes, list[_OnDisk]] = {}  # the newest location last
        self._refs: Counter[bytes] = Counter()
        self._lock = threading.Lock()  # a node's training and checking workers both add and forget

    def add_bytes(self, data: bytes) -> bytes:
        digest = hashlib.sha256(data).digest()
        with self._lock:
            self._bytes[digest] = bytes(data)
            self._refs[digest] += 1
        return digest

    def add_file(self, path: Path, digest: bytes | None = None) -> bytes:
        """Serve a whole file by its sha256: `digest` when the caller computed it as it wrote
        the file, else read and hashed here."""
        digest = digest or file_sha256(path)
        self._add_location(digest, _OnDisk(path))
        return digest

    def add_range(self, path: Path, offset: int, length: int, digest: bytes) -> None:
        """Serve bytes [offset, offset + length) of a file as the blob `digest`, which the
        caller computed as it wrote them (they are not read again here)."""
        self._add_location(digest, _OnDisk(path, offset, length))

    def add_fetched(self, digest: bytes, result: bytes | Path) -> None:
        if isinstance(result, Path):
            self._add_location(digest, _OnDisk(result))
            return
        with self._lock:
            self._bytes[digest] = result
            self._refs[digest] += 1

    def _add_location(self, digest: bytes, where: _OnDisk) -> None:
        with self._lock:
            self._files.setdefault(digest, []).append(where)
            self._refs[digest] += 1

    def forget(self, digest: bytes, path: Path | None = None) -> None:
        """One provider of `digest` is done with it (`path`: its file, which goes away)."""
        with self._lock:
            self._forget(digest, path)

    def _forget(self, digest: bytes, path: Path | None) -> None:
        if self._refs[digest] <= 0:
            self._refs.pop(digest, None)
            return
        self._refs[digest] -= 1
        if path is not None and digest in self._files:
            kept = [w for w in self._files[digest] if w.path != path]
            if kept:
                self._files[digest] = kept  # readers on the host's thread never see it missing
            else:
                del self._files[digest]
        if self._refs[digest] == 0:
            del self._refs[digest]
            self._bytes.pop(digest, None)
            self._files.pop(digest, None)

    def _where(self, digest: bytes) -> _OnDisk:
        return self._files[digest][-1]

    def has(self, digest: bytes) -> bool:
        return digest in self._bytes or digest in self._files

    def size(self, digest: bytes) -> int:
        return len(self._bytes[digest]) if digest in self._bytes else self._where(digest).size()

    def read_all(self, digest: bytes) -> bytes:
        if digest in self._bytes:
            return self._bytes[digest]
        where = self._where(digest)
        with open(where.path, "rb") as f:
            f.seek(where.offset)
            return f.read(where.size())

    def copy_to(self, digest: bytes, dest: Path) -> Path:
        """Write the blob to `dest`, a file's range streamed rather than read whole."""
        if digest in self._bytes:
            dest.write_bytes(self._bytes[digest])
            return dest
        where = self._where(digest)
        if where.offset == 0 and where.length is None:
            shutil.copyfile(where.path, dest)
            return dest
        with open(where.path, "rb") as src, open(dest, "wb") as out:
            src.seek(where.offset)
            left = where.size()
            while left > 0:
                piece = src.read(min(left, CHUNK))
                if not piece:
                    raise OSError(f"{where.path} ends before blob {digest.hex()[:16]} does")
                out.write(piece)
                left -= len(piece)
        return dest

    async def chunks(self, digest: bytes) -> AsyncIterator[bytes]:
        if digest in self._bytes:
            data = self._bytes[digest]
            for at in range(0, len(data), CHUNK):
                yield data[at : at + CHUNK]
            return
        where = self._where(digest)
        left = where.size()
        with open(where.path, "rb") as f:
            f.seek(where.offset)
            while left and (block := await trio.to_thread.run_sync(f.read, min(CHUNK, left))):
                left -= len(block)
                yield block


class MemorySink:
    def __init__(self) -> None:
        self._parts: list[bytes] = []

    async def write(self, data: bytes) -> None:
        self._parts.append(data)

    async def finish(self) -> bytes:
        return b"".join(self._parts)

    async def discard(self) -> None:
        self._parts.clear()


class FileSink:
    def __init__(self, dest: Path):
        self.dest, self.part = dest, dest.with_name(dest.name + ".part")
        self._file = open(self.part, "wb")

    async def write(self, data: bytes) -> None:
        await trio.to_thread.run_sync(self._file.write, data)

    async def finish(self) -> Path:
        self._file.close()
        os.replace(self.part, self.dest)
        return self.dest

    async def discard(self) -> None:
        self._file.close()
        self.part.unlink(missing_ok=True)


async def read_exactly(read: Callable[[int], Awaitable[bytes]], n: int) -> bytes:
    """n bytes from `read(at_most)` calls; EOFError when the stream ends first."""
    parts, remaining = [], n
    while remaining:
        data = await read(min(remaining, CHUNK))
        if not data:
            raise EOFError(f"stream ended {remaining} bytes early")
        parts.append(data)
        remaining -= len(data)
    return b"".join(parts)
