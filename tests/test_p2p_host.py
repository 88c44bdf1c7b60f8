"""The libp2p host on 127.0.0.1: gossip, blobs, hostile peers, and several processes."""

import hashlib
import json
import os
import queue
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import pytest
import trio
from libp2p.custom_types import TProtocol

from p2p.blob_stream import PROTOCOL as BLOB_PROTOCOL
from p2p.blob_stream import RESPONSE as _RESPONSE
from p2p.errors import BlobUnavailable, PeerUnreachable
from p2p.host import MAX_KNOWN, MAX_RECEIVED, Host, redial_delay
from p2p.identity import Identity
from p2p.messages import Heartbeat, RoundEnd, seal
from p2p.workarounds import GOSSIP_PROTOCOL, SafePubsub

PEER = Path(__file__).with_name("p2p_peer.py")
HASH = bytes(32)


@pytest.fixture
def hosts():
    started = []

    def start(n=2, **kwargs):
        first = Host(Identity.generate(), "r", **kwargs).start()
        started.append(first)
        for _ in range(n - 1):
            started.append(Host(Identity.generate(), "r", bootstrap=first.addrs, **kwargs).start())
        return started

    yield start
    for h in started:
        h.close()


def note(round: int) -> RoundEnd:
    """A message on the run's topic, which every member hears."""
    return RoundEnd(round=round, accepted=[], rejected=[], penalized=[], audit_secret=HASH, model_hash=HASH)


def wait_for(predicate, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def publish_until_received(sender, receiver, message, timeout=15.0):
    """The mesh forms within a heartbeat or two: publish until one copy arrives."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        sender.publish(message)
        try:
            return receiver.received.get(timeout=0.5)
        except queue.Empty:
            continue
    raise AssertionError("message never arrived")


def test_peer_id_is_derived_from_the_keypair(hosts):
    a, _ = hosts(2)
    assert a.peer_id == a._host.get_id().to_string()  # libp2p's own id for the same ed25519 key
    assert a.peer_id.startswith("12D3KooW") and a.addrs[0].endswith(a.peer_id)


def test_unreachable_bootstrap_peer_does_not_stop_a_host_from_starting():
    dead = "/ip4/127.0.0.1/tcp/9/p2p/" + Host(Identity.generate(), "r").peer_id
    host = Host(Identity.generate(), "r", bootstrap=[dead]).start()
    try:
        assert host.peers() == [] and dead.rsplit("/", 1)[1] in host.known
        with pytest.raises(PeerUnreachable):
            host.connect(dead, timeout=2)
    finally:
        host.close()


def test_signed_gossip_arrives_verified(hosts):
    a, b = hosts(2)
    envelope = publish_until_received(b, a, note(4))
    assert envelope.sender == b.identity.public_key and envelope.body.round == 4


def test_a_queued_message_sets_arrived_so_the_owner_need_not_poll(hosts):
    a, b = hosts(2)
    publish_until_received(b, a, note(4))
    a.arrived.clear()
    assert not a.arrived.is_set()
    publish_until_received(b, a, note(5))
    assert a.arrived.is_set()


def test_unsigned_wrongly_signed_and_replayed_gossip_is_rejected_and_counted(hosts):
    a, b = hosts(2)
    publish_until_received(b, a, note(0))
    good = seal(b.identity, "r", 10**18, note(1))
    forged = msgpack.unpackb(good)
    forged["from"] = Identity.generate().public_key
    for data in (b"not a message", msgpack.packb(forged), good, good, b"\x00" * (300 * 1024)):
        b.publish_raw(data)
    assert wait_for(lambda: sum(a.inbox.rejected.values()) >= 3)
    assert a.inbox.rejected["malformed"] == 1 and a.inbox.rejected["bad_signature"] == 1
    assert a.inbox.rejected["replayed"] == 1
    assert (
        wait_for(lambda: a.inbox.rejected["oversized"] == 1) or a.inbox.rejected["oversized"] == 0
    )  # libp2p may drop it first


def test_fetch_returns_the_blob_and_a_fetcher_that_keeps_it_serves_it_after(hosts):
    a, b, c = hosts(3)
    data = os.urandom(2_500_000)
    digest = a.provide(data)
    assert b.fetch(digest, len(data), [a.peer_id], keep=True) == data
    a.blobs.forget(digest)
    c.connect(b.addrs[0])
    assert c.fetch(digest, len(data), [a.peer_id, b.peer_id]) == data


def test_re_dials_back_off_to_once_a_minute():
    assert [redial_delay(n) for n in (1, 2, 3, 4, 5, 6, 7, 20)] == [2, 4, 8, 16, 32, 60, 60, 60]


def test_peers_learnt_from_announcements_are_bounded_but_peers_dialled_by_the_owner_stay(hosts):
    (h,) = hosts(1)
    h._remember("owner-dialled", "/ip4/127.0.0.1/tcp/1", sticky=True)
    for i in range(MAX_KNOWN + 10):
        h._remember(f"announced-{i}", "/ip4/127.0.0.1/tcp/2", sticky=False)
    assert len(h.known) == MAX_KNOWN + 1 and "owner-dialled" in h.known and "announced-0" not in h.known


def test_a_flood_of_verified_messages_is_dropped_and_counted_once_the_queue_is_full(hosts):
    a, b = hosts(2)
    for _ in range(MAX_RECEIVED):
        b.received.put_nowait(None)
    deadline = time.time() + 15
    while not b.inbox.rejected.get("overloaded") and time.time() < deadline:
        a.publish(note(1))
        time.sleep(0.2)
    assert b.inbox.rejected["overloaded"] >= 1 and b.received.qsize() == MAX_RECEIVED


def test_a_fetched_blob_is_not_kept_unless_asked(hosts):
    a, b = hosts(2)
    digest = a.provide(b"a target's state")
    assert b.fetch(digest, 100, [a.peer_id]) == b"a target's state" and not b.blobs.has(digest)


def test_a_peer_dripping_bytes_is_cut_off_by_the_overall_deadline(hosts):
    dripper, fetcher = hosts(2, chunk_timeout=1.0, side_channel=False)  # the libp2p stream path
    size = 64 * 1024  # 1 s + 0.25 s at the minimum rate

    async def drip(stream):
        await stream.read(32)
        await stream.write(_RESPONSE.pack(0, size))
        for _ in range(size):
            await stream.write(b"x")
            await trio.sleep(0.2)

    dripper._host.set_stream_handler(TProtocol(BLOB_PROTOCOL), drip)
    started = time.monotonic()
    with pytest.raises(BlobUnavailable, match="slower than"):
        fetcher.fetch(bytes(32), size, [dripper.peer_id])
    assert time.monotonic() - started < 5


def test_blob_over_the_limit_is_refused_and_not_kept(hosts):
    a, b = hosts(2)
    digest = a.provide(os.urandom(1000))
    with pytest.raises(BlobUnavailable, match="BlobTooLarge|limit"):
        b.fetch(digest, 999, [a.peer_id])
    assert not b.blobs.has(digest) and b.scores[a.peer_id] == -1


def test_wrong_bytes_are_rejected_and_the_next_peer_is_tried(hosts):
    liar, honest, fetcher = hosts(3)
    fetcher.connect(honest.addrs[0])
    data = os.urandom(100_000)
    digest = honest.provide(data)
    liar.blobs._bytes[digest] = os.urandom(100_000)  # serves garbage under the right hash
    fetcher.scores[liar.peer_id] = 5  # tried first
    assert fetcher.fetch(digest, len(data), [liar.peer_id, honest.peer_id]) == data
    assert fetcher.scores[liar.peer_id] == 4 and fetcher.scores[honest.peer_id] == 1


def test_a_lying_peer_alone_yields_a_typed_error(hosts):
    liar, fetcher = hosts(2)
    digest = hashlib.sha256(b"real").digest()
    liar.blobs._bytes[digest] = b"fake"
    with pytest.raises(BlobUnavailable, match="hash"):
        fetcher.fetch(digest, 100, [liar.peer_id])
    assert not fetcher.blobs.has(digest)


def test_malformed_pubsub_frame_and_garbage_blob_stream_do_not_crash_the_host(hosts):
    victim, attacker, witness = hosts(3)
    from libp2p.peer.id import ID

    witness.connect(victim.addrs[0])

    async def attack():
        for protocol, junk in (
            (GOSSIP_PROTOCOL, b"\x05\xff\xff\xff\xff\xff"),
            ("/eranos/blob/1.0.0", b"\x01\x02"),
        ):
            stream = await attacker._host.new_stream(ID.from_base58(victim.peer_id), [protocol])
            await stream.write(junk)
            await stream.close()

    before = SafePubsub.decode_errors
    attacker._call(attack)
    assert wait_for(lambda: SafePubsub.decode_errors > before)
    envelope = publish_until_received(witness, victim, note(9))
    assert envelope.body.round == 9
    digest = victim.provide(b"still serving")
    assert witness.fetch(digest, 100, [victim.peer_id]) == b"still serving"


@pytest.mark.slow
def test_200_mb_blob_streams_to_disk_with_bounded_memory(hosts, tmp_path):
    a, b = hosts(2)
    source = tmp_path / "checkpoint.bin"
    with open(source, "wb") as f:
        for _ in range(200):
            f.write(os.urandom(1 << 20))
    digest = a.provide_file(source)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = b.fetch(digest, 300 << 20, [a.peer_id], dest=tmp_path / "copy.bin")
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert out.stat().st_size == 200 << 20 and hashlib.sha256(out.read_bytes()).digest() == digest
    assert grown_mb < 64


def spawn_peer(seed, bootstrap, lifetime=60):
    proc = subprocess.Popen(
        [
            sys.executable,
            str(PEER),
            "--seed",
            str(seed),
            "--lifetime",
            str(lifetime),
            "--bootstrap",
            *bootstrap,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    hello = json.loads(proc.stdout.readline())
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(json.loads(x)) for x in proc.stdout], daemon=True).start()
    return proc, hello, lines


def last_report(lines, want, timeout=45.0):
    deadline, report = time.time() + timeout, {}
    while time.time() < deadline:
        try:
            item = lines.get(timeout=1)
        except queue.Empty:
            continue
        if "fetched" in item:
            report = item
            if want(report):
                return report
    return report


def test_four_processes_gossip_and_fetch_every_payload_and_survive_a_killed_peer():
    first, hello0, lines0 = spawn_peer(0, [])
    others = [spawn_peer(seed, hello0["addrs"]) for seed in (1, 2, 3)]
    procs = [(first, hello0, lines0), *others]
    try:
        digests = {h["digest"] for _, h, _ in procs}
        for _, hello, lines in procs:
            report = last_report(lines, lambda r, h=hello: set(r["fetched"]) == digests - {h["digest"]})
            assert set(report["fetched"]) == digests - {hello["digest"]}
        victim = others[0][0]
        victim.kill()
        victim.wait()
        late, hello_late, lines_late = spawn_peer(4, hello0["addrs"])
        procs.append((late, hello_late, lines_late))
        alive = digests - {others[0][1]["digest"]}
        report = last_report(lines_late, lambda r: alive <= set(r["fetched"]))
        assert alive <= set(report["fetched"])
    finally:
        for proc, _, _ in procs:
            proc.kill()
            proc.wait()


def test_heartbeats_reach_the_coordinator_and_no_other_member():
    hub = Host(Identity.generate(), "r", hub=True).start()
    members = [Host(Identity.generate(), "r", relays=[hub.identity.public_key]).start() for _ in range(2)]
    try:
        for m in members:
            m.connect(hub.addrs[0])
        a, b = members
        a.connect(b.addrs[0])
        publish_until_received(a, b, note(1))
        a.publish(Heartbeat(round=3, model_hash=HASH))
        assert wait_for(lambda: hub.messages["received:Heartbeat"] == 1)
        time.sleep(2)  # two heartbeats of the mesh: time for a stray relay to arrive
        assert b.messages["received:Heartbeat"] == 0 and b.messages["received:RoundEnd"] >= 1
        assert a.messages["sent:Heartbeat"] == 1
    finally:
        for h in [hub, *members]:
            h.close()
