"""Which round comes next, for the round machine: a round started from the ready members, or,
in overlapped rounds, the round announced when the last one's commits closed. Pure functions
of the state; `machine.py` moves the phases.

Overlapped rounds (`rounds.overlap`). Round r + 1 is announced (its RoundStart published) the
moment round r's commits close, with the model every member holds then: the one before round
r's update. Members train it while round r is checked, finalized and applied; commits to it are
taken at once. At round r's cooldown it becomes the round under way, and round r + 2 is announced
when its commits close, with the model after round r. So every round's gradient is one update
behind, as in Psyche; a round that never comes to run (pause, warmup, too few members) gives
back its batches, as a round abandoned mid-way does.

A member's commit to round r + 1 starts from the optimizer state its own round-r payload left:
whether that state counts is known only once round r is finalized, so the link of each commit
to the member's accepted state is judged then (`link`). If round r did not accept the member's
payload (rejected it, or never saw it: a commit lost on the way), its commit to r + 1 may start
from a state the run never took, and an honest member could not have known: such a commit is
stale, rejected and not penalized. A member whose payload round r accepted has no such excuse.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from coordinator.state import CommitInfo, Effect, Phase, Publish, Round, State
from p2p.messages import FRESH_STATE, RoundStart
from protocol.assignment import assign_batches
from protocol.checks import commitment


def round_seed(run_seed: int, number: int) -> int:
    digest = hashlib.sha256(f"eranos/{run_seed}/{number}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def round_secrets(secret: bytes, number: int) -> tuple[bytes, bytes]:
    """(check secret, audit secret) of round `number`, from the run's private secret."""
    base = secret + number.to_bytes(8, "little")
    return hashlib.sha256(b"check" + base).digest(), hashlib.sha256(b"audit" + base).digest()


def new_round(s: State, now: float, step: int, effects: list[Effect]) -> tuple[State, Round]:
    """Deal the next batches (carried-over ones first) to the ready members, publish the
    RoundStart, and return the state past those batches with the new round."""
    cfg = s.config
    members = s.ready_members
    number, seed = s.next_round, round_seed(cfg.seed, s.next_round)
    carried = s.carry_over[: cfg.global_batch]
    fresh = max(0, cfg.global_batch - len(carried))
    batch_ids = list(carried) + list(range(s.next_batch, s.next_batch + fresh))
    weights = {k: s.members[k].throughput for k in members} if cfg.weight_by_throughput else None
    batches = assign_batches(seed, members, batch_ids, weights)
    check_secret, audit_secret = round_secrets(s.secret, number)
    deadline = now + cfg.round_timeout_s
    shares = {k: tuple(v) for k, v in batches.items()}
    r = Round(number, step, seed, check_secret, audit_secret, now, deadline, shares, s.model_hash)
    start = RoundStart(
        round=number,
        step=step,
        seed=seed,
        members=list(members),
        batches={k: list(v) for k, v in batches.items()},
        deadline=deadline,
        model_hash=s.model_hash,
        check_commitment=commitment(check_secret),
        audit_commitment=commitment(audit_secret),
    )
    effects.append(Publish(start))
    s = replace(
        s,
        next_round=number + 1,
        next_batch=s.next_batch + fresh,
        carry_over=s.carry_over[len(carried) :],
    )
    return s, r


def announce(s: State, now: float, effects: list[Effect]) -> State:
    """Overlapped rounds: start the next round now that the current one's commits closed,
    unless the run ends with the current one or has too few members that hold the model."""
    cfg = s.config
    more = s.finalized_rounds + 2 <= cfg.rounds
    if not cfg.overlap or not more or len(s.ready_members) < cfg.min_nodes:
        return s
    s, upcoming = new_round(s, now, s.round.step + 1, effects)
    return replace(s, upcoming=upcoming)


def promote(s: State) -> State:
    """The announced round becomes the round under way, its early commits linked to the states
    the round just finalized left."""
    r = s.upcoming
    commits = {k: _linked(s, k, c) for k, c in r.commits.items()}
    return replace(s, round=replace(r, commits=commits), upcoming=None)


def abandon_upcoming(s: State) -> State:
    """The announced round will not run: its batches go back to be handed out first."""
    if s.upcoming is None:
        return s
    ids = tuple(sorted(b for ids in s.upcoming.batches.values() for b in ids))
    return replace(s, upcoming=None, carry_over=s.carry_over + ids)


def in_flight(s: State) -> int:
    """Batches handed to rounds not finalized yet (the current one before its cooldown, and
    the announced one): neither accepted nor carried over, and not lost."""
    unsettled = [s.upcoming] + ([s.round] if s.phase in (Phase.TRAINING, Phase.FINALIZE) else [])
    return sum(len(ids) for r in unsettled if r is not None for ids in r.batches.values())


def reports_due_from(s: State) -> float:
    """When the cooldown's wait for members to report the round just finalized starts. In
    overlapped rounds a member applies it only after training the upcoming round, so each
    report is due cooldown_s after the last upcoming commit (or the upcoming deadline, while a
    worker has not committed), not after the round ended."""
    since, up = s.phase_started_at, s.upcoming
    if up is None:
        return since
    if any(k not in up.commits for k in up.workers):
        return max(since, up.deadline)
    return max([since, *(c.at for c in up.commits.values())])


def link(s: State, key: bytes, state_before: bytes) -> tuple[bool, bool]:
    """(chained, stale) of a commit from `key` starting from `state_before`: chained when it is
    the member's last accepted state or a fresh one; otherwise stale (overlapped rounds) when the
    last finalized round did not accept the member's payload, so an honest member may have
    started from a state the run never took, or when the member was penalized since. A commit
    that is neither starts from a state no accepted payload left: a lie."""
    if key in s.banned:
        return True, True
    if state_before in (FRESH_STATE, s.states.get(key)):
        return True, False
    stale = key in s.stale_from
    return stale, stale


def _linked(s: State, key: bytes, c: CommitInfo) -> CommitInfo:
    chained, stale = link(s, key, c.state_before)
    return replace(c, chained=chained, stale=stale)


def not_accepted(s: State, r: Round, accepted: set[bytes]) -> frozenset[bytes]:
    """Overlapped rounds: the workers of round `r` whose payload it did not accept (`stale_from`)."""
    if not s.config.overlap:
        return frozenset()
    return frozenset(k for k in r.workers if k not in accepted)
