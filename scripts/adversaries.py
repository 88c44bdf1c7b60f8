"""The simulator's dishonest members: `Behaviour`s injected into a node runtime (never reachable
from `eranos node`), one per way a member could try to be paid for less than the work.

Payloads:  noise, flip, flip5 (5% of signs every round), other-data, stale (its own from three
           rounds back), malformed, restamp (its honest payload moved to the next step), copy
           (another member's payload as is), near-copy (another's, claimed, one sign flipped),
           sometimes (noise in about half the rounds, hoping to be unchecked), late (commits
           just before the deadline), idle (heartbeats, never trains).
Verdicts:  liar (rejects everything it checks), rubber-stamp (accepts without the replay's
           evidence), accomplice (accepts its partners' work, honest otherwise).
Serving:   withhold (sends noise and refuses its states to the validator drawn for it),
           serve-nothing (commits, serves nobody).
Groups:    sybil (noise in about half the rounds, accepts its partners' work).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace

from node.runtime import Behaviour, NodeRuntime
from p2p.errors import BlobError, LocalError
from p2p.identity import peer_id_of
from p2p.messages import RoundStart, Verdict
from scripts import tampering


class Adversary(Behaviour):
    def __init__(self, partners: frozenset[bytes] = frozenset()) -> None:
        self.partners = partners  # other identities of the same operator


def _coin(start: RoundStart, me: bytes) -> bool:
    """A fair coin per round and member that nobody else steers."""
    return hashlib.sha256(start.check_commitment + me).digest()[0] < 128


class Noise(Adversary):
    def payload(self, node, start, honest):
        return tampering.noise(node.optimizer.spec, honest, start.seed)


class Flip(Adversary):
    def payload(self, node, start, honest):
        return tampering.flip(node.optimizer.spec, honest)


class Flip5(Adversary):
    def payload(self, node, start, honest):
        return tampering.flip_share(node.optimizer.spec, honest, 0.05, start.seed)


class OtherData(Adversary):
    def batches(self, node, start):
        return [b + tampering.OTHER_DATA_OFFSET for b in start.batches[node.me]]


class Stale(Adversary):
    def __init__(self, partners: frozenset[bytes] = frozenset()) -> None:
        super().__init__(partners)
        self.history: list[bytes] = []

    def payload(self, node, start, honest):
        self.history.append(honest)
        if len(self.history) <= tampering.STALE_ROUNDS:
            return honest
        old = self.history[-1 - tampering.STALE_ROUNDS]
        return tampering.restamp(node.optimizer.spec, old, start.step, start.round)


class Malformed(Adversary):
    def payload(self, node, start, honest):
        return tampering.malformed(honest)


class Restamp(Adversary):
    def payload(self, node, start, honest):
        return tampering.restamp(node.optimizer.spec, honest, start.step + 1, start.round)


class Copy(Adversary):
    """Waits for another member's commit and sends its payload (which names its author)."""

    def payload(self, node, start, honest):
        taken = self.take(node, start)
        return honest if taken is None else taken

    def take(self, node: NodeRuntime, start: RoundStart) -> bytes | None:
        deadline = min(start.deadline - 1, time.time() + 30)
        while time.time() < deadline:
            view = node.state.rounds.get(start.round)
            others = [(k, c) for k, c in (view.commits.items() if view else ()) if k != node.me]
            for key, commit in others:
                try:
                    return node.checker.fetch_payload(commit, key)
                except (BlobError, LocalError):
                    pass
            time.sleep(0.1)
        return None


class NearCopy(Copy):
    def payload(self, node, start, honest):
        taken = self.take(node, start)
        if taken is None:
            return honest
        spec = node.optimizer.spec
        return tampering.flip_share(spec, tampering.claim(spec, taken, node.me), 0.0, start.seed)  # one sign


class Sometimes(Adversary):
    def payload(self, node, start, honest):
        return tampering.noise(node.optimizer.spec, honest, start.seed) if _coin(start, node.me) else honest


class Late(Adversary):
    def payload(self, node, start, honest):
        time.sleep(max(0.0, start.deadline - time.time() - 1.0))
        return honest


class Idle(Adversary):
    def payload(self, node, start, honest):
        return None


class Liar(Adversary):
    def verdict(self, node, honest):
        return replace(honest, accept=False)


class RubberStamp(Adversary):
    def verdict(self, node, honest):
        return replace(honest, accept=True, score=1.0, evidence=bytes(32))


class Accomplice(Adversary):
    def verdict(self, node, honest: Verdict) -> Verdict:
        return replace(honest, accept=True) if honest.target in self.partners else honest


class Sybil(Accomplice):
    def payload(self, node, start, honest):
        return tampering.noise(node.optimizer.spec, honest, start.seed) if _coin(start, node.me) else honest


class Withhold(Adversary):
    """Sends noise and hides it: serves its optimizer states to everyone but the validator
    drawn to check it (a second validator is then drawn)."""

    def __init__(self, partners: frozenset[bytes] = frozenset()) -> None:
        super().__init__(partners)
        self.wired = False

    def batches(self, node, start):
        if not self.wired:
            node.host.serves = lambda peer, digest: peer not in self.checkers(node)
            self.wired = True
        return super().batches(node, start)

    def payload(self, node, start, honest):
        return tampering.noise(node.optimizer.spec, honest, start.seed)

    @staticmethod
    def checkers(node: NodeRuntime) -> set[str]:
        views = list(node.state.rounds.values())
        return {peer_id_of(v) for view in views for v, t in view.validators.items() if t == node.me}


class ServeNothing(Adversary):
    """Commits and serves nobody anything: not its payload, not its states."""

    def batches(self, node, start):
        node.host.serves = lambda peer, digest: False
        return super().batches(node, start)


KINDS = {
    "noise": Noise,
    "flip": Flip,
    "flip5": Flip5,
    "other-data": OtherData,
    "stale": Stale,
    "malformed": Malformed,
    "restamp": Restamp,
    "copy": Copy,
    "near-copy": NearCopy,
    "sometimes": Sometimes,
    "late": Late,
    "idle": Idle,
    "liar": Liar,
    "rubber-stamp": RubberStamp,
    "accomplice": Accomplice,
    "sybil": Sybil,
    "withhold": Withhold,
    "serve-nothing": ServeNothing,
}
PARTNERED = ("accomplice", "sybil")  # act with other identities of the same operator
