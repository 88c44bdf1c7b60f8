"""Who checks whom, drawn only once nobody can change what is checked.

The coordinator commits in `RoundStart` to two secrets by hash (`check_commitment`,
`audit_commitment`). When commits close it reveals the check secret with the commits it
admitted; the check seed mixes that secret with the root over those commits, so the draw is
fixed by data the coordinator committed to before any member committed and by the members'
own commits, and no member can know when it commits whether it will be checked. Audits of
accepting verdicts are drawn from the audit secret and the verdict itself, so a validator cannot
know, when it sends an accept, whether a second replay will examine it; that secret is revealed
in `RoundEnd`, and every member can recompute every draw of the round (`verify_reveal`).

What the coordinator can still do: it knows both secrets, so it could choose which commits to
admit (it can always drop a member's commit, as the run's authority) to steer the draw. It
cannot change a secret after committing to it, and what it revealed is checkable by anyone.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

import numpy as np

from protocol.commitments import commitment_root


def commitment(secret: bytes) -> bytes:
    return hashlib.sha256(secret).digest()


def check_seed(secret: bytes, commits: Mapping[bytes, bytes]) -> int:
    """The round's check seed from the revealed secret and member key -> payload hash."""
    digest = hashlib.sha256(b"eranos/check" + secret + commitment_root(commits)).digest()
    return int.from_bytes(digest[:8], "little")


def choose_checks(seed: int, members: Sequence[bytes], targets: Sequence[bytes], rate: float) -> dict:
    """validator -> target for rate * len(targets) of the targets on average. Members sit on a
    ring shuffled by the seed; the first sampled targets in ring order are each checked by their
    successor, so nobody checks itself and no validator has two targets."""
    if not 0 <= rate <= 1:
        raise ValueError("the validation rate is a fraction in [0, 1]")
    if len(members) < 2:
        return {}
    order = sorted(members)
    ring = [order[i] for i in np.random.default_rng([seed, 1]).permutation(len(order))]
    wanted = set(targets)
    sampled = [i for i, m in enumerate(ring) if m in wanted][: check_count(seed, rate * len(wanted))]
    return {ring[(i + 1) % len(ring)]: ring[i] for i in sampled}


def check_count(seed: int, expected: float) -> int:
    """floor(expected), plus one with probability its fractional part, drawn from the seed: each
    target is then checked with probability exactly the rate. Rounding up instead would check
    small runs far more than asked (at 4 members, rate 0.05 would check a quarter of them)."""
    whole = math.floor(expected)
    return whole + int(np.random.default_rng([seed, 2]).random() < expected - whole)


def audited(audit_secret: bytes, round_number: int, target: bytes, validator: bytes, rate: float) -> bool:
    """Whether the accept `validator` sent for `target` gets a second, independent replay."""
    material = b"eranos/audit" + audit_secret + round_number.to_bytes(8, "little") + target + validator
    draw = int.from_bytes(hashlib.sha256(material).digest()[:8], "little") / 2**64
    return draw < rate


def choose_second(audit_secret: bytes, members: Sequence[bytes], target: bytes, exclude: set) -> bytes | None:
    """An independent second validator for `target`, drawn from the audit secret: not the target
    and nobody in `exclude` (who already replayed it); None when nobody is left."""
    eligible = sorted(m for m in members if m != target and m not in exclude)
    if not eligible:
        return None
    draw = hashlib.sha256(b"eranos/second" + audit_secret + target).digest()
    return eligible[int.from_bytes(draw[:8], "little") % len(eligible)]


def verify_reveal(
    commitment_: bytes,
    secret: bytes,
    commits: Mapping[bytes, bytes],
    members: Sequence[bytes],
    rate: float,
    validators: Mapping[bytes, bytes],
) -> bool:
    """A member's check of the coordinator's reveal: the secret is the one committed to, and
    the published assignment is the one the seed gives."""
    if commitment(secret) != commitment_:
        return False
    return dict(validators) == choose_checks(check_seed(secret, commits), members, list(commits), rate)
