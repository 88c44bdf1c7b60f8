"""Bulk blob transfer on a plain TCP side channel, authenticated by the same ed25519 peer keys.

libp2p's Python Noise and yamux framing moves blobs 4-6x slower than raw TCP here
(BENCHMARKS.md). Blobs are content-addressed and hash-checked, and nothing in them is secret from
the run's members, so the bytes need no encryption, only the request needs its sender: whom a
blob is served to (`Host.serves`) depends on who asks.

    client                                      server
                 <- nonce (32)
    key (32), digest (32), signature (64) ->    signature over DOMAIN + nonce + server key + digest
                 <- status (1), size (8)
                 <- size bytes                  (only with status HAVE)

A fresh nonce per connection makes a captured request useless. Every read has a deadline and a
transfer must average MIN_RATE after its first chunk, as on the libp2p path; a client that does
not complete the handshake in time is dropped. The server's port is learnt through a libp2p
stream (`PORT_PROTOCOL`), so only connected, Noise-authenticated peers learn it.
"""

from __future__ import annotations

import hashlib
import os
import struct
from functools import partial
from pathlib import Path

import trio

from p2p.blobs import CHUNK, BlobStore, FileSink, MemorySink, read_exactly
from p2p.errors import BlobHashMismatch, BlobTimeout, BlobTooLarge, BlobTruncated, BlobUnavailable
from p2p.identity import Identity, key_of_peer_id, peer_id_of, verify

DOMAIN = b"eranos-bulk-1"
HAVE, MISSING = 0, 1
RESPONSE = struct.Struct("<BQ")
REQUEST = 32 + 32 + 64
MAX_CONNECTIONS = 64  # served at once; more wait for a slot
MIN_RATE = 256 * 1024  # bytes/s a transfer must average beyond the first chunk's deadline
PORT = struct.Struct("<H")
PORT_PROTOCOL = "/eranos/bulk-port/1.0.0"  # the libp2p protocol that tells a peer the port


class NoBulkChannel(BlobUnavailable):
    """The side channel cannot be reached (a firewall, an old peer): use the libp2p stream."""


def request_message(nonce: bytes, server_key: bytes, digest: bytes) -> bytes:
    return DOMAIN + nonce + server_key + digest


class BulkServer:
    """Serves `blobs` to clients whose signed request names a digest `serves(key, digest)` allows."""

    def __init__(self, identity: Identity, blobs: BlobStore, serves, traffic, timeout: float) -> None:
        self.identity, self.blobs, self.serves, self.traffic = identity, blobs, serves, traffic
        self.timeout = timeout
        self.slots = trio.CapacityLimiter(MAX_CONNECTIONS)
        self.refused = 0  # requests with a bad signature, or that did not finish the handshake

    async def handle(self, stream: trio.SocketStream) -> None:
        async with self.slots, stream:
            try:
                await self._serve(stream)
            except (trio.TooSlowError, EOFError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass  # a vanished or dawdling client: its connection only

    async def _serve(self, stream: trio.SocketStream) -> None:
        nonce = os.urandom(32)
        with trio.fail_after(self.timeout):
            await stream.send_all(nonce)
            request = await read_exactly(stream.receive_some, REQUEST)
        key, digest, signature = request[:32], request[32:64], request[64:]
        if not verify(key, request_message(nonce, self.identity.public_key, digest), signature):
            self.refused += 1
            return
        if not self.blobs.has(digest) or not self.serves(peer_id_of(key), digest):
            await stream.send_all(RESPONSE.pack(MISSING, 0))
            return
        size = self.blobs.size(digest)
        await stream.send_all(RESPONSE.pack(HAVE, size))
        with trio.fail_after(self.timeout + size / MIN_RATE):
            async for chunk in self.blobs.chunks(digest):
                await stream.send_all(chunk)
                self.traffic["blob_sent"] += len(chunk)


async def fetch(
    identity: Identity, address: tuple[str, int], server_key: bytes, digest: bytes, size_limit: int,
    sink, timeout: float, traffic, peer: str,
):  # fmt: skip
    """The blob from a bulk server, hash-checked into `sink`; BlobError subclasses name `peer`."""
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(*address)
    except (trio.TooSlowError, OSError) as exc:
        raise NoBulkChannel(f"no bulk channel at {address[0]}:{address[1]}: {exc}", peer) from None
    async with stream:
        try:
            with trio.fail_after(timeout):
                nonce = await read_exactly(stream.receive_some, 32)
                message = request_message(nonce, server_key, digest)
                await stream.send_all(identity.public_key + digest + identity.sign(message))
                status, size = RESPONSE.unpack(await read_exactly(stream.receive_some, RESPONSE.size))
            if status != HAVE:
                raise BlobUnavailable("peer does not have the blob", peer)
            if size > size_limit:
                raise BlobTooLarge(f"peer announced {size} bytes, limit {size_limit}", peer)
            sha, remaining = hashlib.sha256(), size
            with trio.fail_after(timeout + size / MIN_RATE):
                while remaining:
                    data = await stream.receive_some(min(CHUNK, remaining))
                    if not data:
                        raise BlobTruncated(f"closed with {remaining} of {size} bytes missing", peer)
                    sha.update(data)
                    traffic["blob_received"] += len(data)
                    await sink.write(data)
                    remaining -= len(data)
        except trio.TooSlowError:
            await sink.discard()
            raise BlobTimeout(f"bulk transfer slower than {MIN_RATE} B/s or stalled", peer) from None
        except (EOFError, trio.BrokenResourceError, OSError) as exc:
            await sink.discard()
            raise BlobTruncated(f"bulk stream failed: {exc}", peer) from None
        except BaseException:
            await sink.discard()
            raise
    if sha.digest() != digest:
        await sink.discard()
        raise BlobHashMismatch("bytes do not hash to the requested sha256", peer)
    return await sink.finish()


class SideChannel:
    """One host's side channel: its server, and the endpoints of its peers' (asked once each
    over libp2p through `ask_port(peer)`, None when a peer offers none)."""

    def __init__(
        self, identity: Identity, blobs: BlobStore, serves, traffic, timeout: float, ask_port
    ) -> None:
        self.identity, self.traffic, self.timeout, self.ask_port = identity, traffic, timeout, ask_port
        self.server = BulkServer(identity, blobs, serves, traffic, timeout)
        self.endpoints: dict[str, tuple[str, int] | None] = {}

    async def start(self, nursery: trio.Nursery, ip: str, set_handler) -> None:
        listeners = await nursery.start(partial(trio.serve_tcp, self.server.handle, 0, host=ip))
        port = listeners[0].socket.getsockname()[1]

        async def tell_port(stream) -> None:
            try:
                await stream.write(PORT.pack(port))
                await stream.close()
            except Exception:  # a vanished asker
                pass

        set_handler(PORT_PROTOCOL, tell_port)

    async def endpoint(self, peer: str) -> tuple[str, int] | None:
        if peer not in self.endpoints:
            found = None
            try:
                with trio.fail_after(self.timeout):
                    stream = await self.ask_port(peer)
                    (port,) = PORT.unpack(await read_exactly(stream.read, PORT.size))
                    remote = stream.get_remote_address()
                    found = (remote[0], port) if remote else None
                    await stream.close()
            except Exception:  # an older peer, or one without the side channel
                found = None
            self.endpoints[peer] = found
        return self.endpoints[peer]

    async def fetch(self, peer: str, digest: bytes, size_limit: int, dest: Path | None):
        """The blob over the peer's side channel; NoBulkChannel when there is none to use."""
        try:
            server_key = key_of_peer_id(peer)
        except ValueError:
            raise NoBulkChannel("not an ed25519 peer", peer) from None
        address = await self.endpoint(peer)
        if address is None:
            raise NoBulkChannel("no side channel", peer)
        sink = MemorySink() if dest is None else FileSink(dest)
        try:
            return await fetch(
                self.identity, address, server_key, digest, size_limit, sink, self.timeout, self.traffic, peer
            )
        except NoBulkChannel:
            self.endpoints[peer] = None
            raise
