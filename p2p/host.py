"""The libp2p host: the only module that talks to libp2p, run on its own trio thread.

Synchronous code (the training loop, the coordinator) calls the methods of `Host` from any
thread; each hops onto the trio thread with `trio.from_thread.run`. Work on the trio thread is
limited to I/O and signature checks; disk reads and writes go through `trio.to_thread`.

Gossip: one topic per run. Outgoing messages are sealed (signed) here with a sequence number
that starts at the current time in microseconds, so a restarted node never reuses one. Incoming
messages pass through the pure `Inbox` (signature, run, replay); verified ones land in
`Host.received`, a thread-safe queue, and rejections are counted in `Host.inbox.rejected`.

Blobs: over the key-authenticated TCP side channel (p2p/bulk.py), or a libp2p stream
(p2p/blob_stream.py) to peers without one; from the best-scored peer that serves the blob whole
and correct. Any peer that fetched a blob serves it.
"""

import itertools
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair as ed25519_key_pair
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.tools.anyio_service import background_trio_service

from p2p import blob_stream, bulk, workarounds
from p2p.addresses import announced, bind_error, local_ipv4s
from p2p.blobs import BlobStore
from p2p.errors import (
    BlobError,
    BlobUnavailable,
    LocalError,
    PeerUnreachable,
    RemoteError,
)
from p2p.identity import Identity, peer_id_of
from p2p.messages import Envelope, Inbox, Message, seal
from p2p.topics import coordinator_topic, run_topic, runs_in, topic_for

log = logging.getLogger(__name__)

MAX_RECEIVED = 20_000  # verified messages waiting for the owner's loop
MAX_KNOWN = 2048  # peers learnt from announcements, re-dialled when they drop
MAX_REDIALS = 10  # failed re-dials in a row before such a peer is forgotten


def redial_delay(failures: int) -> float:
    """Seconds before the next re-dial of a peer that failed `failures` times in a row."""
    return min(60.0, 2.0 * 2 ** max(0, failures - 1))


class Host:
    def __init__(
        self,
        identity: Identity,
        run: str | None,
        listen: str = "/ip4/127.0.0.1/tcp/0",
        bootstrap: Sequence[str] = (),
        chunk_timeout: float = 10.0,
        pinned: Sequence[bytes] = (),
        announce: Sequence[str] = (),
        side_channel: bool = True,
        hub: bool = False,
        relays: Sequence[bytes] = (),
    ):
        # gossip relays every member reaches directly: the coordinator is the `hub`, and a member
        # names it in `relays` (public keys); see p2p/workarounds.py, item 8
        self.hub, self.relays = hub, frozenset(peer_id_of(key) for key in relays)
        self.identity, self.run = identity, run  # run None: on no topic until join_run
        self.listen, self.chunk_timeout = multiaddr.Multiaddr(listen), chunk_timeout
        self.announce = list(announce)  # what peers are told to dial; empty: derived from `listen`
        self.inbox = Inbox(run or "", pinned=frozenset(pinned))
        # verified messages for the owner's loop; bounded, so a flood costs drops (counted), not memory
        self.received: queue.Queue[Envelope] = queue.Queue(maxsize=MAX_RECEIVED)
        self.arrived = threading.Event()  # set with each message queued, so a loop need not poll
        self.blobs = BlobStore()
        # whom a blob is served to (peer id, digest): everyone that asks, unless an operator limits it
        self.serves: Callable[[str, bytes], bool] = lambda peer, digest: True
        self.scores: Counter[str] = Counter()  # peer id -> score; failures push it down
        # bytes moved: blob_received, blob_sent, gossip_received, gossip_sent (for the owner's metrics)
        self.traffic: Counter[str] = Counter()
        self.messages: Counter[str] = Counter()  # gossip messages: "sent:Commit", "received:Heartbeat", ...
        # blobs served and fetched over the key-authenticated TCP side channel (p2p/bulk.py)
        self.side = (
            bulk.SideChannel(identity, self.blobs, self._serving, self.traffic, chunk_timeout, self._ask_port)
            if side_channel
            else None
        )
        self.known: dict[str, str] = {}  # peer id -> multiaddr, re-dialled when a connection drops
        self._sticky: set[str] = set()  # known peers the owner connected to itself: never forgotten
        self._failures: Counter[str] = Counter()  # consecutive failed re-dials, for the back-off
        self._next_dial: dict[str, float] = {}
        self._bootstrap = list(bootstrap)
        self._seq = itertools.count(time.time_ns() // 1000)
        self._ready, self._failure = threading.Event(), None
        self._thread: threading.Thread | None = None
        self._publish_interval = 1.0 / workarounds.PUBLISH_RATE
        self._last_publish = 0.0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> "Host":
        self._thread = threading.Thread(
            target=self._thread_main, name=f"p2p-{self.identity.address[:8]}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout):
            raise LocalError("p2p host did not start in time")
        if self._failure is not None:
            raise LocalError(f"p2p host failed to start: {self._failure}") from self._failure
        if not self._host.get_addrs():  # libp2p logs a failed bind and carries on deaf
            self.close()
            raise LocalError(f"cannot listen on {self.listen}: {bind_error(str(self.listen))}")
        for addr in self._bootstrap:
            try:
                self.connect(addr)
            except PeerUnreachable as err:  # the re-dial loop keeps trying
                log.warning("bootstrap peer unreachable: %s", err)
        return self

    def close(self) -> None:
        if self._thread and self._thread.is_alive():
            self._call(self._stop_async)
            self._thread.join(timeout=10)

    def _thread_main(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as err:  # surfaced to start(); the thread must not die silently
            self._failure = err
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        key_pair = ed25519_key_pair(self.identity.seed)
        self._host = new_host(
            key_pair=key_pair, sec_opt=workarounds.noise_only(key_pair), listen_addrs=[self.listen]
        )
        gossipsub = workarounds.gossipsub(self.hub, self.relays)
        self._pubsub = workarounds.SafePubsub(self._host, gossipsub)
        async with self._host.run(listen_addrs=[self.listen]), trio.open_nursery() as nursery:
            self._nursery = nursery
            self._host.set_stream_handler(blob_stream.PROTOCOL, self._serve_blob)
            if self.side is not None:
                ip = self.listen.value_for_protocol("ip4") if "/ip4/" in str(self.listen) else "0.0.0.0"
                await self.side.start(nursery, ip, self._host.set_stream_handler)
            async with background_trio_service(self._pubsub), background_trio_service(gossipsub):
                await self._pubsub.wait_until_ready()
                if self.run is not None:
                    await self._subscribe(self.run)
                nursery.start_soon(self._redial_forever)
                self._ready.set()
                await self._stop.wait()
                nursery.cancel_scope.cancel()

    async def _subscribe(self, run: str) -> None:
        topics = [run_topic(run), coordinator_topic(run)] if self.hub else [run_topic(run)]
        for topic in topics:
            self._nursery.start_soon(self._drain, await self._pubsub.subscribe(topic))

    def join_run(self, run: str) -> None:
        """Take the run's topic, for a host started on none (`run=None`)."""
        if self.run is not None:
            raise LocalError(f"already on run {self.run!r}")
        self.run, self.inbox = run, Inbox(run, pinned=frozenset(self.inbox.pinned))
        self._call(self._subscribe, run)

    def runs_of(self, peer: str) -> list[str]:
        """The runs whose topics a connected peer subscribes to (from its gossip subscriptions)."""
        return self._call(self._runs_of_async, peer)

    async def _runs_of_async(self, peer: str) -> list[str]:
        topics = self._pubsub.peer_topics.items()
        return runs_in([t for t, peers in topics if any(str(p) == peer for p in peers)])

    async def _stop_async(self) -> None:
        self._stop.set()

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    # -- peers -----------------------------------------------------------------------------
    @property
    def peer_id(self) -> str:
        return peer_id_of(self.identity.public_key)

    @property
    def addrs(self) -> list[str]:
        """The multiaddrs peers can dial this host at (never 0.0.0.0)."""
        listening = [str(a) for a in self._host.get_addrs()]
        return announced(listening, self.announce, local_ipv4s(), self.peer_id)

    def peers(self) -> list[str]:
        return self._call(self._peers_async)

    async def _peers_async(self) -> list[str]:
        return sorted(p.to_string() for p in self._host.get_connected_peers())

    def connect(self, addr: str, timeout: float = 10.0, sticky: bool = True) -> str:
        """Dial `addr` and keep re-dialling it whenever the connection drops (with back-off);
        a peer that is not `sticky` is forgotten after MAX_REDIALS failures in a row."""
        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        peer = info.peer_id.to_string()
        self._remember(peer, addr, sticky)
        self._call(self._connect_async, info, timeout)
        return peer

    def _remember(self, peer: str, addr: str, sticky: bool) -> None:
        if sticky:
            self._sticky.add(peer)
        self.known.pop(peer, None)
        self.known[peer] = addr
        self._failures.pop(peer, None)
        forgettable = [p for p in self.known if p not in self._sticky]
        for old in forgettable[: max(0, len(forgettable) - MAX_KNOWN)]:
            self._forget_peer(old)

    def _forget_peer(self, peer: str) -> None:
        self.known.pop(peer, None)
        self._failures.pop(peer, None)
        self._next_dial.pop(peer, None)

    def dial_soon(self, addrs: Sequence[str], timeout: float = 5.0) -> None:
        """Connect to the first of `addrs` that answers, on a short-lived thread: for callers
        whose loop must not block on a peer that announced itself (failures are only logged)."""

        def dial() -> None:
            for addr in addrs:
                try:
                    self.connect(addr, timeout, sticky=False)
                    return
                except (LocalError, RemoteError, ValueError) as err:
                    log.debug("cannot dial %s: %s", addr, err)

        threading.Thread(target=dial, name="dial", daemon=True).start()

    async def _connect_async(self, info, timeout: float) -> None:
        workarounds.allow_redial(self._host, info.peer_id)
        try:
            with trio.fail_after(timeout):
                await self._host.connect(info)
        except Exception as err:  # timeouts and libp2p's many dial errors alike
            raise PeerUnreachable(
                f"dial failed: {type(err).__name__}: {err}", info.peer_id.to_string()
            ) from None
        if self.side is not None:  # learn its side channel now, not on the first fetch's clock
            self._nursery.start_soon(self.side.endpoint, info.peer_id.to_string())

    async def _redial_forever(self) -> None:
        """A dropped peer is re-dialled, so a killed relay never partitions the rest: first after
        2 s, then backing off to once a minute; a peer the owner did not dial itself is forgotten
        after MAX_REDIALS failures in a row."""
        while True:
            await trio.sleep(2.0)
            connected, now = set(await self._peers_async()), trio.current_time()
            for peer, addr in list(self.known.items()):
                if peer in connected:
                    self._failures.pop(peer, None)
                    continue
                if now < self._next_dial.get(peer, 0.0):
                    continue
                try:
                    await self._connect_async(info_from_p2p_addr(multiaddr.Multiaddr(addr)), 2.0)
                    self._failures.pop(peer, None)
                except PeerUnreachable as err:
                    self._failures[peer] += 1
                    self._next_dial[peer] = now + redial_delay(self._failures[peer])
                    if self._failures[peer] >= MAX_REDIALS and peer not in self._sticky:
                        self._forget_peer(peer)
                    log.debug("re-dial failed (%d in a row): %s", self._failures[peer], err)

    # -- gossip ----------------------------------------------------------------------------
    def publish(self, message: Message) -> None:
        """Sign and publish on the run's topic; raises LocalError if libp2p refuses it."""
        if self.run is None:
            raise LocalError("not on any run's topic yet")
        sealed = seal(self.identity, self.run, next(self._seq), message)
        self._call(self._publish_async, sealed, topic_for(self.run, message))
        self.messages["sent:" + type(message).__name__] += 1

    def publish_raw(self, data: bytes) -> None:
        """Publish bytes as given, not sealed: what a hostile peer can send (the simulator's
        hostile peer and tests use it to check that receivers refuse such gossip)."""
        self._call(self._publish_async, data, run_topic(self.run))

    async def _publish_async(self, data: bytes, topic: str) -> None:
        wait = self._last_publish + self._publish_interval - trio.current_time()
        if wait > 0:
            await trio.sleep(wait)
        self._last_publish = trio.current_time()
        try:
            await self._pubsub.publish(topic, data)
            self.traffic["gossip_sent"] += len(data)
        except Exception as err:
            raise LocalError(f"publish failed: {err}") from err

    async def _drain(self, subscription) -> None:
        """Drain continuously: libp2p drops silently once its 32-message queue is full."""
        while True:
            message = await subscription.get()
            self.traffic["gossip_received"] += len(message.data)
            envelope = self.inbox.receive(message.data)
            if envelope is not None:
                self.messages["received:" + type(envelope.body).__name__] += 1
                try:
                    self.received.put_nowait(envelope)
                except queue.Full:
                    self.inbox.rejected["overloaded"] += 1
                self.arrived.set()

    # -- blobs -----------------------------------------------------------------------------
    def provide(self, data: bytes) -> bytes:
        return self.blobs.add_bytes(data)

    def provide_file(self, path: str | Path) -> bytes:
        return self.blobs.add_file(Path(path))

    def fetch(
        self,
        digest: bytes,
        size_limit: int,
        peers: Sequence[str],
        dest: str | Path | None = None,
        keep: bool = False,
    ) -> bytes | Path:
        """The blob with this sha256 from the first of `peers` (best score first) that serves it
        whole and correct: bytes, or the file `dest` when given (streamed, not held in memory).
        `keep`: serve it from now on too (until `blobs.forget`)."""
        target = None if dest is None else Path(dest)
        return self._call(self._fetch_async, digest, size_limit, list(peers), target, keep)

    async def _fetch_async(
        self, digest: bytes, size_limit: int, peers: list[str], dest: Path | None, keep: bool
    ):
        if self.blobs.has(digest):
            return self.blobs.read_all(digest) if dest is None else self.blobs.copy_to(digest, dest)
        failures = []
        for peer in sorted(peers, key=lambda p: -self.scores[p]):
            try:
                try:
                    if self.side is None:
                        raise bulk.NoBulkChannel("no side channel", peer)
                    result = await self.side.fetch(peer, digest, size_limit, dest)
                except bulk.NoBulkChannel:
                    result = await blob_stream.fetch(
                        self._host, peer, digest, size_limit, dest, self.chunk_timeout, self.traffic
                    )
            except BlobError as err:
                self.scores[peer] -= 1
                failures.append(f"{peer[-8:]}: {err}")
                continue
            self.scores[peer] += 1
            if keep:
                self.blobs.add_fetched(digest, result)
            return result
        raise BlobUnavailable(f"blob {digest.hex()[:16]} from none of {len(peers)} peers: {failures}")

    def _serving(self, peer: str, digest: bytes) -> bool:
        return self.serves(peer, digest)  # looked up per request: owners replace `serves` at will

    async def _ask_port(self, peer: str):
        """A libp2p stream to `peer`'s side-channel port service (bulk.SideChannel asks it)."""
        return await self._host.new_stream(ID.from_base58(peer), [bulk.PORT_PROTOCOL])

    async def _serve_blob(self, stream) -> None:
        await blob_stream.serve(stream, self.blobs, self.serves, self.chunk_timeout, self.traffic)
