"""The simulator's hostile peer sends what it claims: each of its messages is one a receiver must
refuse, or (signed by a non-member) one only membership rules can turn away."""

import queue
from types import SimpleNamespace

from p2p.identity import Identity
from p2p.messages import Commit, Inbox, Join, Recheck, Reveal, RoundEnd, RoundStart, RunInfo, Verdict
from scripts.hostile_peer import Hostile


def test_every_attack_is_refused_for_its_reason_or_arrives_from_a_non_member():
    peer = SimpleNamespace(
        identity=Identity.generate(), addrs=["/ip4/127.0.0.1/tcp/1"], received=queue.Queue()
    )
    inbox = Inbox("run")
    arrived = [inbox.receive(data) for _, data in Hostile(peer, "run").attacks()]
    assert dict(inbox.rejected) == {
        "malformed": 1,
        "oversized": 1,
        "bad_signature": 1,
        "replayed": 1,
        "wrong_run": 1,
    }
    bodies = [type(e.body) for e in arrived if e is not None]
    steering = [RoundStart, RoundEnd, Reveal, Recheck, RunInfo]  # obeyed from the coordinator only
    assert bodies == [*steering, Commit, Join, Commit, Verdict]  # one of the replayed pair
    assert {e.sender for e in arrived if e is not None} == {peer.identity.public_key}
