"""The bulk side channel: blobs over plain TCP, the request signed by the asker's peer key.
Every hostile case ends in a typed error or a refusal, and a peer without the channel is
fetched from over the libp2p stream instead."""

import os
import socket
import struct
from functools import partial

import pytest
import trio

from p2p import bulk
from p2p.blobs import MemorySink, read_exactly
from p2p.errors import BlobUnavailable
from p2p.host import Host
from p2p.identity import Identity


@pytest.fixture
def pair():
    started = []

    def start(**kwargs):
        a = Host(Identity.generate(), "r", **kwargs).start()
        b = Host(Identity.generate(), "r", bootstrap=a.addrs, **kwargs).start()
        started.extend([a, b])
        return a, b

    yield start
    for h in started:
        h.close()


def test_a_blob_moves_over_the_side_channel_not_the_libp2p_stream(pair):
    a, b = pair()
    data = os.urandom(3_000_000)
    digest = a.provide(data)
    assert b.fetch(digest, len(data), [a.peer_id]) == data
    assert b.side.endpoints[a.peer_id] is not None and a.traffic["blob_sent"] == len(data)


def test_a_peer_without_the_side_channel_is_fetched_from_over_libp2p(pair):
    a, _ = pair(side_channel=False)
    b = Host(Identity.generate(), "r", bootstrap=a.addrs).start()
    try:
        data = os.urandom(100_000)
        digest = a.provide(data)
        assert b.fetch(digest, len(data), [a.peer_id]) == data
        assert b.side.endpoints[a.peer_id] is None
    finally:
        b.close()


def test_the_serves_filter_applies_to_the_side_channel(pair):
    a, b = pair()
    digest = a.provide(b"members only")
    a.serves = lambda peer, d: peer != b.peer_id
    with pytest.raises(BlobUnavailable, match="does not have"):
        b.fetch(digest, 100, [a.peer_id])


def test_a_blob_over_the_limit_is_refused_before_its_bytes(pair):
    a, b = pair()
    digest = a.provide(os.urandom(1000))
    with pytest.raises(BlobUnavailable, match="limit"):
        b.fetch(digest, 999, [a.peer_id])
    assert not b.blobs.has(digest)


def endpoint(a: Host, b: Host) -> tuple[str, int]:
    b.fetch(a.provide(b"warm"), 10, [a.peer_id])
    return b.side.endpoints[a.peer_id]


def test_a_request_signed_by_another_key_is_refused(pair):
    a, b = pair()
    digest = a.provide(b"secret-ish")
    host, port = endpoint(a, b)
    mallory = Identity.generate()
    with socket.create_connection((host, port), timeout=5) as s:
        nonce = s.recv(32)
        forged = (
            b.identity.public_key
            + digest
            + mallory.sign(bulk.request_message(nonce, a.identity.public_key, digest))
        )
        s.sendall(forged)
        assert s.recv(9) == b""  # closed without an answer
    assert a.side.server.refused == 1


def test_a_replayed_request_fails_on_a_fresh_nonce(pair):
    a, b = pair()
    digest = a.provide(b"once")
    host, port = endpoint(a, b)
    with socket.create_connection((host, port), timeout=5) as s:
        old_nonce = s.recv(32)
    request = (
        b.identity.public_key
        + digest
        + b.identity.sign(bulk.request_message(old_nonce, a.identity.public_key, digest))
    )
    with socket.create_connection((host, port), timeout=5) as s:
        s.recv(32)
        s.sendall(request)
        assert s.recv(9) == b""


def test_a_client_that_never_sends_its_request_is_dropped(pair):
    a, b = pair(chunk_timeout=1.0)
    host, port = endpoint(a, b)
    with socket.create_connection((host, port), timeout=5) as s:
        s.recv(32)
        s.settimeout(5)
        assert s.recv(9) == b""  # the server hung up after its deadline


def test_a_server_that_lies_about_the_bytes_is_caught_by_the_hash():
    async def main():
        me, server_key, digest = Identity.generate(), Identity.generate().public_key, os.urandom(32)

        async def liar(stream):
            await stream.send_all(os.urandom(32))
            await read_exactly(stream.receive_some, bulk.REQUEST)
            await stream.send_all(bulk.RESPONSE.pack(bulk.HAVE, 5) + b"fake!")

        async with trio.open_nursery() as nursery:
            (listener,) = await nursery.start(partial(trio.serve_tcp, liar, 0, host="127.0.0.1"))
            port = listener.socket.getsockname()[1]
            with pytest.raises(Exception, match="hash"):
                await bulk.fetch(
                    me,
                    ("127.0.0.1", port),
                    server_key,
                    digest,
                    100,
                    MemorySink(),
                    2.0,
                    {"blob_received": 0},
                    "p",
                )
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_a_dripping_server_is_cut_off_by_the_overall_deadline():
    async def main():
        me = Identity.generate()

        async def dripper(stream):
            await stream.send_all(os.urandom(32))
            await read_exactly(stream.receive_some, bulk.REQUEST)
            await stream.send_all(bulk.RESPONSE.pack(bulk.HAVE, 64 * 1024))
            for _ in range(64 * 1024):
                await stream.send_all(b"x")
                await trio.sleep(0.2)

        async with trio.open_nursery() as nursery:
            (listener,) = await nursery.start(partial(trio.serve_tcp, dripper, 0, host="127.0.0.1"))
            port = listener.socket.getsockname()[1]
            with trio.fail_after(10), pytest.raises(Exception, match="slower than"):
                await bulk.fetch(
                    me,
                    ("127.0.0.1", port),
                    bytes(32),
                    bytes(32),
                    1 << 20,
                    MemorySink(),
                    1.0,
                    {"blob_received": 0},
                    "p",
                )
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_the_port_message_is_two_bytes():
    assert bulk.PORT.size == 2 and struct.calcsize("<BQ") == bulk.RESPONSE.size
