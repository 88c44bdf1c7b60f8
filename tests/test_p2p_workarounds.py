"""Each test pins a py-libp2p 0.8.1 behaviour that a workaround in p2p/workarounds.py relies
on. If one fails after an upgrade, re-examine the workaround rather than the test."""

import inspect
import socket
import time

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.io.utils import DEFAULT_RETRY_READ_COUNT, read_exactly
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport

from p2p import workarounds
from p2p.errors import PeerUnreachable
from p2p.host import Host
from p2p.identity import Identity, peer_id_of
from p2p.messages import MAX_MESSAGE_BYTES, RoundEnd


def defaults(fn) -> dict:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_default_host_still_offers_plaintext_so_we_offer_noise_only():
    assert "PLAINTEXT_PROTOCOL_ID" in inspect.getsource(new_host.__globals__["new_swarm"])
    assert list(workarounds.noise_only(create_new_key_pair())) == ["/noise"]


def test_a_plaintext_only_peer_cannot_connect_to_our_host():
    ours = Host(Identity.generate(), "r").start()
    try:

        async def dial():
            key_pair = create_new_key_pair()
            plain = new_host(key_pair=key_pair, sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(key_pair)})
            async with plain.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
                with trio.fail_after(10):
                    await plain.connect(info_from_p2p_addr(multiaddr.Multiaddr(ours.addrs[0])))

        with pytest.raises(Exception):  # noqa: B017 - any refusal; libp2p's error types vary
            trio.run(dial)
        assert ours.peers() == []
    finally:
        ours.close()


def test_pubsub_read_loop_still_lets_decode_errors_escape():
    source = inspect.getsource(Pubsub.continuously_read_stream)
    assert "ParseFromString" in source and "DecodeError" not in source


def test_adaptive_gossip_is_on_by_default_and_we_turn_it_off():
    assert defaults(GossipSub.__init__)["adaptive_gossip_enabled"] is True
    assert workarounds.gossipsub().adaptive_gossip_enabled is False


def test_the_per_peer_spam_limit_is_raised_for_relays_and_our_publishes_stay_under_it():
    assert defaults(GossipSub.__init__)["max_messages_per_topic_per_second"] == 10.0
    assert defaults(GossipSub.__init__)["spam_protection_enabled"] is True
    ours = workarounds.gossipsub()
    assert (
        ours.spam_protection_enabled
        and ours.max_messages_per_topic_per_second == workarounds.RELAY_RATE_LIMIT
    )
    assert workarounds.PUBLISH_RATE < workarounds.RELAY_RATE_LIMIT


def test_gossip_messages_stay_well_under_the_rpc_size_limit():
    assert MAX_MESSAGE_BYTES * 4 <= defaults(Pubsub.__init__)["max_inbound_rpc_size"]


def test_read_exactly_still_gives_up_after_a_fixed_number_of_reads():
    assert DEFAULT_RETRY_READ_COUNT == 100
    assert "retry_count" in inspect.signature(read_exactly).parameters


def test_a_peer_that_was_not_listening_yet_can_be_dialled_as_soon_as_it_is():
    port = free_port()
    identity = Identity.generate()
    addr = f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer_id_of(identity.public_key)}"
    dialler = Host(Identity.generate(), "r").start()
    try:
        with pytest.raises(PeerUnreachable):
            dialler.connect(addr, timeout=5)  # marks the peer failed in libp2p's negative cache
        late = Host(identity, "r", listen=f"/ip4/127.0.0.1/tcp/{port}").start()
        try:
            assert dialler.connect(addr, timeout=5) == late.peer_id
        finally:
            late.close()
    finally:
        dialler.close()


def test_the_mesh_still_prunes_beyond_degree_high_and_would_graft_direct_peers():
    source = inspect.getsource(GossipSub.mesh_heartbeat)
    assert "effective_degree_high" in source and "peers_to_prune" in source
    assert "direct" not in inspect.getsource(GossipSub._get_in_topic_gossipsub_peers_from_minus)
    assert workarounds.gossipsub().degree_high < 16


def test_a_direct_peer_is_never_chosen_for_the_mesh():
    router = workarounds.gossipsub(hub=True)
    direct, meshable = ID(b"\x00" * 8), ID(b"\x01" * 8)
    router.direct_peers[direct] = PeerInfo(direct, [])
    router.pubsub = type("P", (), {"peer_topics": {"t": {direct, meshable}}})()
    router.peer_protocol = {direct: workarounds.GOSSIP_PROTOCOL, meshable: workarounds.GOSSIP_PROTOCOL}
    assert router._get_in_topic_gossipsub_peers_from_minus("t", 10, set()) == [meshable]


def test_every_member_of_a_star_hears_every_other_member_beyond_the_mesh_ceiling():
    """14 members that each dial only the hub: the hub's mesh would hold 12 of them."""
    hub = Host(Identity.generate(), "r", hub=True).start()
    members = []
    try:
        for _ in range(14):
            members.append(Host(Identity.generate(), "r", relays=[hub.identity.public_key]).start())
            members[-1].connect(hub.addrs[0])
        time.sleep(3)  # several heartbeats: a pruning mesh would have cut members off by now
        for sender in (members[0], members[-1]):
            sender.publish(
                RoundEnd(
                    round=7,
                    accepted=[],
                    rejected=[],
                    penalized=[],
                    audit_secret=bytes(32),
                    model_hash=bytes(32),
                )
            )
        heard = {m.peer_id: set() for m in members}
        deadline = time.time() + 20
        while time.time() < deadline and any(len(h) < 2 for p, h in heard.items()):
            for m in members:
                while not m.received.empty():
                    heard[m.peer_id].add(m.received.get().sender)
            time.sleep(0.1)
        senders = {members[0].identity.public_key, members[-1].identity.public_key}
        for m in members:
            assert heard[m.peer_id] >= senders - {m.identity.public_key}, m.peer_id
    finally:
        for h in [hub, *members]:
            h.close()
