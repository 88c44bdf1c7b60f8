"""The blob protocol over a libp2p stream, `/eranos/blob/1.0.0`: for peers without the side
channel (p2p/bulk.py), which carries blobs otherwise.

The client writes the 32-byte sha256 it wants; the server answers status u8 (0: here it comes,
1: not here) and size u64, then the bytes in 1 MiB writes. The client checks the size against
its limit before reading, reads with a timeout per chunk and a minimum average rate, hashes as
it goes, and keeps nothing that fails the hash.
"""

import hashlib
import logging
import struct
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from p2p.blobs import CHUNK, BlobStore, FileSink, MemorySink, read_exactly
from p2p.errors import BlobError, BlobHashMismatch, BlobTimeout, BlobTooLarge, BlobTruncated, BlobUnavailable

log = logging.getLogger(__name__)

PROTOCOL = TProtocol("/eranos/blob/1.0.0")
RESPONSE = struct.Struct("<BQ")
MIN_RATE = 256 * 1024  # bytes/s a transfer must average, beyond the first chunk timeout
_HAVE, _MISSING = 0, 1


async def fetch(
    host, peer: str, digest: bytes, size_limit: int, dest: Path | None, chunk_timeout: float, traffic: Counter
) -> bytes | Path:
    """The blob from `peer` over a new stream of libp2p `host`: bytes, or the file `dest`."""
    try:
        with trio.fail_after(chunk_timeout):
            stream = await host.new_stream(ID.from_base58(peer), [PROTOCOL])
    except trio.TooSlowError:
        raise BlobTimeout("opening a blob stream timed out", peer) from None
    except Exception as err:
        raise BlobUnavailable(f"cannot open a blob stream: {err}", peer) from None
    sink = MemorySink() if dest is None else FileSink(dest)  # only once there is a stream to fill it
    try:
        await stream.write(digest)
        status, size = RESPONSE.unpack(await _read_exactly(stream, RESPONSE.size, chunk_timeout))
        if status != _HAVE:
            raise BlobUnavailable("peer does not have the blob", peer)
        if size > size_limit:
            raise BlobTooLarge(f"peer announced {size} bytes, limit {size_limit}", peer)
        sha, remaining = hashlib.sha256(), size
        with trio.fail_after(chunk_timeout + size / MIN_RATE):  # no dripping a byte at a time
            while remaining:
                data = await _read_exactly(stream, min(CHUNK, remaining), chunk_timeout)
                sha.update(data)
                traffic["blob_received"] += len(data)
                await sink.write(data)
                remaining -= len(data)
        if sha.digest() != digest:
            raise BlobHashMismatch("bytes do not hash to the requested sha256", peer)
        return await sink.finish()
    except trio.TooSlowError:
        await sink.discard()
        raise BlobTimeout(f"no data for {chunk_timeout} s, or slower than {MIN_RATE} B/s", peer) from None
    except BlobError as err:
        await sink.discard()
        err.peer = err.peer or peer
        raise
    except Exception as err:  # stream reset, EOF or connection loss, in libp2p's own types
        await sink.discard()
        raise BlobTruncated(f"stream failed: {type(err).__name__}", peer) from None
    finally:
        try:
            await stream.close()
        except Exception:  # already reset by the peer
            pass


async def serve(
    stream, blobs: BlobStore, serves: Callable[[str, bytes], bool], chunk_timeout: float, traffic: Counter
) -> None:
    """Answer one request on `stream`: the blob, if held and `serves(peer, digest)` allows it."""
    try:
        digest = await _read_exactly(stream, 32, chunk_timeout)
        if not blobs.has(digest) or not serves(stream.muxed_conn.peer_id.to_string(), digest):
            await stream.write(RESPONSE.pack(_MISSING, 0))
        else:
            await stream.write(RESPONSE.pack(_HAVE, blobs.size(digest)))
            async for chunk in blobs.chunks(digest):
                await stream.write(chunk)
                traffic["blob_sent"] += len(chunk)
        await stream.close()
    except Exception as err:  # a hostile or vanished client: drop its stream, keep serving others
        log.debug("blob request failed: %s", err)
        try:
            await stream.reset()
        except Exception:
            pass


async def _read_exactly(stream, n: int, timeout: float) -> bytes:
    """Read n bytes with a timeout per read; libp2p's own helper gives up after 100 frames."""

    async def read(at_most: int) -> bytes:
        with trio.fail_after(timeout):
            return await stream.read(at_most)

    try:
        return await read_exactly(read, n)
    except EOFError as exc:
        raise BlobTruncated(str(exc)) from None
