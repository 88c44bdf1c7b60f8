"""Every workaround for py-libp2p 0.8.1's defects, in one place (see ../shared/notes/p2p.md).
Each has a test in tests/test_p2p_workarounds.py that fails if an upgrade changes the behaviour
it relies on, so the workaround can then be re-examined rather than silently kept.

1. Plaintext is accepted by default: offer Noise only.
2. One malformed protobuf frame on a pubsub stream raises DecodeError out of
   `Pubsub.continuously_read_stream` and kills the host: catch it per stream, reset the stream,
   count it.
3. "Adaptive gossip" stretches a 1 s heartbeat to 60 s in small meshes: turn it off.
4. Spam protection allows 10 messages/s per topic *per forwarding peer*, which counts
   everything a relay forwards (a coordinator relaying every member's heartbeats exceeds it
   with a handful of nodes, and the receiver then drops RoundStarts): raise it to
   `RELAY_RATE_LIMIT`, which still bounds a flooding peer, and pace our own publishes
   (`PUBLISH_RATE`). Every message is verified and replay-checked by the Inbox anyway.
5. Gossip RPCs over 1 MiB are dropped silently at the sender: gossip carries only small signed
   messages (p2p.messages.MAX_MESSAGE_BYTES); payloads go through the blob protocol.
6. `read_exactly` gives up after 100 reads of one yamux frame each: the blob protocol reads
   with its own loop (blob_stream.py `_read_exactly`).
7. A peer whose every address failed once is refused without dialling for 60 s (the swarm's
   negative cache), so a node started before its coordinator listens, or retrying after an
   outage, keeps failing for a minute after the peer is back: an explicit `Host.connect` first
   takes the peer out of that cache (`allow_redial`).
8. The mesh keeps at most `degree_high` peers and prunes the rest: with a coordinator that every
   member dials, members beyond 12 were pruned out of its mesh and got nothing more from it (16
   nodes: 10 never committed). Direct peers (always sent every message, never meshed) fix that,
   but 0.8.1 still grafts direct peers into the mesh and the other side then prunes them, and
   takes its direct peers only at start. `StarGossipSub` adds direct peers as they connect
   (every peer, on the coordinator; the coordinator, on a member), never meshes them, and sends
   them only the topics they subscribe to.
"""

import logging

from google.protobuf.message import DecodeError
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

log = logging.getLogger(__name__)


def allow_redial(host, peer_id) -> None:
    """Take `peer_id` out of the swarm's negative dial cache (workaround 7)."""
    host.get_network().unblock_peer(peer_id)


GOSSIP_PROTOCOL = TProtocol("/meshsub/1.1.0")
PUBLISH_RATE = 8.0  # our own messages per second per topic
RELAY_RATE_LIMIT = 500.0  # messages per second per topic accepted from one peer (library default 10)


def noise_only(key_pair: KeyPair) -> dict:
    return {
        NOISE_PROTOCOL_ID: NoiseTransport(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)
    }


class StarGossipSub(GossipSub):
    """Gossipsub with a relay every member reaches directly (workaround 8).

    `hub`: this host is the relay and takes every peer that connects as a direct peer.
    `relays`: peer ids this host takes as direct peers when they connect (a member's coordinator).
    """

    def __init__(self, hub: bool, relays: frozenset[str], **options) -> None:
        super().__init__(**options)
        self.hub, self.relays = hub, relays

    def add_peer(self, peer_id: ID, protocol_id) -> None:
        if self.hub or peer_id.to_string() in self.relays:
            self.direct_peers[peer_id] = PeerInfo(peer_id, [])
        super().add_peer(peer_id, protocol_id)

    def remove_peer(self, peer_id: ID) -> None:
        self.direct_peers.pop(peer_id, None)
        super().remove_peer(peer_id)

    def _get_peers_to_send(self, topic_ids, msg_forwarder, origin, msg_id=None):
        """As gossipsub's, but a direct peer gets only the topics it subscribes to (0.8.1 sends
        a direct peer every topic, so members would get the coordinator's own topic)."""
        topics = list(topic_ids)
        listening = set().union(*(self.pubsub.peer_topics.get(t, ()) for t in topics))
        for peer in super()._get_peers_to_send(topics, msg_forwarder, origin, msg_id):
            if peer not in self.direct_peers or peer in listening:
                yield peer

    def _get_in_topic_gossipsub_peers_from_minus(self, topic, num_to_select, minus, backoff_check=False):
        return super()._get_in_topic_gossipsub_peers_from_minus(
            topic, num_to_select, set(minus) | set(self.direct_peers), backoff_check
        )


def gossipsub(hub: bool = False, relays: frozenset[str] = frozenset()) -> GossipSub:
    return StarGossipSub(
        hub,
        relays,
        protocols=[GOSSIP_PROTOCOL],
        degree=6,
        degree_low=4,
        degree_high=12,
        heartbeat_initial_delay=0.1,
        heartbeat_interval=1,
        adaptive_gossip_enabled=False,
        max_messages_per_topic_per_second=RELAY_RATE_LIMIT,
    )


class SafePubsub(Pubsub):
    """Pubsub that survives malformed frames from a peer."""

    decode_errors = 0

    async def continuously_read_stream(self, stream) -> None:  # type: ignore[override]
        try:
            await super().continuously_read_stream(stream)
        except DecodeError:
            SafePubsub.decode_errors += 1
            log.warning("malformed pubsub frame from %s: stream reset", stream.muxed_conn.peer_id)
            try:
                await stream.reset()
            except Exception:  # the stream may already be gone; nothing more to do
                pass
