"""Settling each contribution of a round: accepted, rejected, or penalized, and who is credited
or penalized for checking it. Pure: the round's record and the time in, a settlement out.

For a committed target T (a member given batches), in this order:
- T's payload failed the coordinator's check (malformed, or stamped for another sender, round or
  step), or T started from an optimizer state no accepted payload left it: penalized.
- T's commit is stale (overlapped rounds: it started from T's payload of the round before,
  which was rejected): rejected, unchecked.
- The coordinator could not fetch T's payload: rejected, with a strike (withholding).
- T was not drawn for a check: accepted, unverified.
- T's validator V accepted, and the audit draw passed it over: accepted; V credited.
- V accepted and was audited, V was silent, or V could not fetch T's state: a second validator
  W, drawn from neither side, replays T.
  - W agrees with an accepting V: accepted; both credited. W silent: accepted; V credited.
  - V silent or unavailable, W accepts: accepted; W credited. Both silent: accepted, unverified.
  - Neither could fetch T's state (V unavailable, W unavailable or silent; or V accepted and
    W unavailable): rejected, with a strike when two validators found it unavailable.
- V or W rejected, or two accepts disagree on the evidence (the replayed gradient's digest,
  which only a replay can know): every other member of the round is asked. The side holding a
  strict majority of all the run's members other than T wins, once every asked member has voted
  or the dispute's deadline passed: T is accepted or penalized,
  the winners credited, every available voter on the losing side penalized. No majority by the
  deadline: rejected, nobody penalized. So no coalition smaller than half the members can get
  an honest validator or target penalized.
A member that reports it could not fetch is never penalized for it; credit needs a check
nobody contradicted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import StrEnum

from coordinator.state import Round, VerdictInfo
from protocol.checks import audited
from protocol.run_config import RoundsSection


class Settled(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"  # left out of the aggregate, no penalty
    PENALIZED = "penalized"


@dataclass(frozen=True)
class Settlement:
    outcome: Settled
    verified: bool = False  # a replay that nobody contradicted reproduced it
    strike: bool = False  # rejected for withholding
    credited: tuple[bytes, ...] = ()
    penalized: tuple[bytes, ...] = ()  # validators contradicted by the majority
    loss: float | None = None  # the target's loss as the accepted replays computed it


@dataclass(frozen=True)
class Ask:
    """More replays are needed: a second validator, or the whole round (a dispute)."""

    dispute: bool


WAIT = None  # the verdicts this stage needs are still due


def settle(
    r: Round, target: bytes, now: float, cfg: RoundsSection, exact: bool, members: frozenset[bytes]
) -> Settlement | Ask | None:
    """Settle `target`, or say what must happen first (None: wait). `members`: the run's members;
    those other than the target are the voters a dispute's majority is measured against. `exact`: honest
    replays agree to the bit, so accepts must carry equal evidence."""
    timeout = cfg.verdict_timeout_s
    if r.checks.get(target) is False or not r.commits[target].chained:
        return Settlement(Settled.PENALIZED)
    if r.commits[target].stale:
        return Settlement(Settled.REJECTED)
    if target not in r.checks:
        return WAIT if now < r.revealed_at + timeout else Settlement(Settled.REJECTED)
    if r.checks[target] is None:
        return Settlement(Settled.REJECTED, strike=True)
    if target in r.disputes:
        return _dispute(r, target, now, timeout, exact, members - {target})
    v = r.validator_of(target)
    if v is None:
        return Settlement(Settled.ACCEPTED)
    first = r.verdicts.get((v, target))
    if first is None and now < r.revealed_at + timeout:
        return WAIT
    if first is not None and first.available and not first.accept:
        return Ask(dispute=True)
    if first is not None and first.available and first.accept and target not in r.seconds:
        if not audited(r.audit_secret, r.number, target, v, cfg.audit_rate):
            return Settlement(Settled.ACCEPTED, True, credited=(v,), loss=first.loss)
    return _second(r, target, v, first, now, timeout, exact)


def _second(
    r: Round, target: bytes, v: bytes, first: VerdictInfo | None, now: float, timeout: float, exact: bool
) -> Settlement | Ask | None:
    if target not in r.seconds:
        return Ask(dispute=False)
    w, asked_at = r.seconds[target]
    second = r.verdicts.get((w, target)) if w is not None else None
    if second is None and w is not None and now < asked_at + timeout:
        return WAIT
    first_ok = first is not None and first.available and first.accept
    if second is not None and second.available:
        if not second.accept or (first_ok and not _agree(first, second, exact)):
            return Ask(dispute=True)
        credited = (v, w) if first_ok else (w,)
        return Settlement(Settled.ACCEPTED, True, credited=credited, loss=second.loss)
    if second is not None:  # W could not fetch T's state either
        return Settlement(Settled.REJECTED, strike=True)
    if first_ok:
        return Settlement(Settled.ACCEPTED, True, credited=(v,), loss=first.loss)
    if first is None:
        return Settlement(Settled.ACCEPTED)  # nobody replayed it: unverified
    return Settlement(Settled.REJECTED)


def _agree(a: VerdictInfo, b: VerdictInfo, exact: bool) -> bool:
    return a.accept == b.accept and (not exact or a.evidence == b.evidence)


def _dispute(
    r: Round, target: bytes, now: float, timeout: float, exact: bool, voters: frozenset[bytes]
) -> Settlement | None:
    votes = {v: info for (v, t), info in r.verdicts.items() if t == target and info.available}
    sides = Counter((info.accept, info.evidence if exact else b"") for info in votes.values())
    winner = next((side for side, n in sides.items() if 2 * n > len(voters)), None)
    asked = {k for k in voters if k in r.batches}  # the run's members that hold the round's model
    everyone = asked <= {v for v, t in r.verdicts if t == target}
    if now < r.disputes[target] + timeout and (winner is None or not everyone):
        return WAIT  # every asked vote counts: a dishonest one that comes late is still penalized
    if winner is None:
        return Settlement(Settled.REJECTED)
    won = tuple(sorted(v for v, i in votes.items() if (i.accept, i.evidence if exact else b"") == winner))
    lost = tuple(sorted(set(votes) - set(won)))
    if winner[0]:
        loss = votes[won[0]].loss
        return Settlement(Settled.ACCEPTED, True, credited=won, penalized=lost, loss=loss)
    return Settlement(Settled.PENALIZED, True, credited=won, penalized=lost)
