"""A hostile peer for `eranos sim --hostile`: joins a run's gossip and sends what an attacker can.

Every --every seconds, until --duration has passed, it publishes the next of:
- bytes that are not a message; a message over the size limit;
- a RoundEnd "from" the coordinator (its key, learnt from the coordinator's gossip) that
  rejects everyone, with a signature that cannot verify;
- a Commit of its own, signed, published twice with the same sequence number (a replay);
- a message sealed for another run;
- correctly signed messages from a key that is not a member: the coordinator's messages
  (RoundStart for round 10^9, RoundEnd rejecting everyone, Reveal and Recheck naming itself as
  a validator, RunInfo with another config), a Join, a Commit for the current round and a
  Verdict rejecting a member.
Receivers must refuse or ignore every one; the run must finish as if it were not there.

    python scripts/hostile_peer.py --connect MULTIADDR --run NAME --duration 300
"""

import argparse
import hashlib
import itertools
import sys
import time
from pathlib import Path

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2p.addresses import parse_peer
from p2p.errors import LocalError, PeerUnreachable  # noqa: E402
from p2p.host import Host  # noqa: E402
from p2p.identity import Identity  # noqa: E402
from p2p.messages import (  # noqa: E402
    FRESH_STATE,
    MAX_MESSAGE_BYTES,
    Commit,
    Join,
    Recheck,
    Reveal,
    RoundEnd,
    RoundStart,
    RunInfo,
    Verdict,
    seal,
)

FAKE = hashlib.sha256(b"hostile").digest()


class Hostile:
    def __init__(self, host: Host, run: str) -> None:
        self.host, self.run = host, run
        self.coordinator: bytes | None = None
        self.round, self.members = 0, [FAKE]
        self.seq = itertools.count(1)

    def learn(self) -> None:
        """What it overheard: the coordinator's key, the round under way and its members."""
        while not self.host.received.empty():
            envelope = self.host.received.get_nowait()
            if isinstance(envelope.body, (RunInfo, RoundStart)):
                self.coordinator = envelope.sender
            if isinstance(envelope.body, RoundStart):
                self.round, self.members = envelope.body.round, envelope.body.members or [FAKE]

    def commit(self) -> Commit:
        return Commit(self.round, FAKE, 1000, FAKE, 0.1, FRESH_STATE, FAKE)

    def sealed(self, message, run: str | None = None) -> bytes:
        return seal(self.host.identity, run or self.run, next(self.seq), message)

    def attacks(self) -> list[tuple[str, bytes]]:
        end = RoundEnd(self.round, [], self.members, [], FAKE, FAKE)
        forged = msgpack.unpackb(self.sealed(end))
        forged["from"] = self.coordinator or FAKE
        replayed = self.sealed(self.commit())
        victim = self.members[0]
        return [
            ("non-member RoundStart", self.sealed(RoundStart(10**9, 0, 0, [], {}, 0.0, FAKE, FAKE, FAKE))),
            ("non-member RoundEnd", self.sealed(end)),
            (
                "non-member Reveal",
                self.sealed(Reveal(self.round, FAKE, {}, {self.host.identity.public_key: victim})),
            ),
            ("non-member Recheck", self.sealed(Recheck(self.round, {victim: [victim]}))),
            (
                "non-member RunInfo",
                self.sealed(RunInfo("[rounds]\nmin_nodes = 1\n", 0, "waiting", -1, FAKE, 0)),
            ),
            ("malformed", b"\x93not a message"),
            ("oversized", b"\x00" * (MAX_MESSAGE_BYTES + 1)),
            ("forged RoundEnd", msgpack.packb(forged)),
            ("replayed Commit", replayed),
            ("replayed Commit", replayed),
            ("other run", self.sealed(self.commit(), run=self.run + "-other")),
            ("non-member Join", self.sealed(Join(self.host.addrs))),
            ("non-member Commit", self.sealed(self.commit())),
            ("non-member Verdict", self.sealed(Verdict(self.round, victim, False, 0.0, True, FAKE, 0.0))),
        ]


def connect(host: Host, addr: str, attempts: int) -> None:
    """Dial the run, which may not be listening yet, once a second."""
    for attempt in range(attempts):
        try:
            host.connect(addr)
            return
        except PeerUnreachable:
            if attempt == attempts - 1:
                raise
            time.sleep(1.0)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connect", required=True, help="a multiaddr in the run's gossip (the coordinator's)")
    ap.add_argument("--run", required=True, help="the run's name (its gossip topic)")
    ap.add_argument("--duration", type=float, default=300.0)
    ap.add_argument("--every", type=float, default=0.5, help="seconds between two messages")
    args = ap.parse_args(argv)
    _, coordinator = parse_peer(args.connect)
    host = Host(Identity.generate(), args.run, relays=[coordinator]).start()  # reaches it as members do
    sent = 0
    try:
        connect(host, args.connect, attempts=60)
        hostile = Hostile(host, args.run)
        end = time.monotonic() + args.duration
        while time.monotonic() < end:
            hostile.learn()
            for name, data in hostile.attacks():
                try:
                    host.publish_raw(data)
                    sent += 1
                except LocalError as exc:  # libp2p itself refuses some (the oversized one)
                    print(f"{name}: refused locally ({exc})", flush=True)
                time.sleep(args.every)
    finally:
        print(f"hostile peer: {sent} messages sent", flush=True)
        host.close()


if __name__ == "__main__":
    main()
