"""The round state machine: `step(state, event, now) -> Result(state, effects, outcome)`.

Theory of operation. Time and input arrive as arguments; nothing here reads a clock, draws a
random number or does I/O, so a journal of (event, now) pairs replays to the same state and tests
drive it with a fake clock. `apply` folds one event into the state; `tick` moves phases on
deadlines and completions; `step` does both, so the shell calls it for every event and on a
timer (event None).

    WAITING --enough members--> WARMUP --all ready / timeout--> TRAINING --all committed / deadline-->
    FINALIZE --all checks and verdicts / timeout--> COOLDOWN --hashes reported / timeout--> TRAINING
    (or WARMUP when a member must resync or joined, WAITING below min_nodes, FINISHED after the
    last round). PAUSED from anywhere but FINISHED; RESUME returns to WAITING.

Overlapped rounds (`rounds.overlap`): the next round is announced as commits close and takes
over at the cooldown (coordinator/rounds.py); the phases above are the current round's.

Checks are drawn only once commits close: `RoundStart` commits to the round's two secrets by
hash, `Reveal` opens the first when the phase turns to FINALIZE, `RoundEnd` the second (see
protocol/checks.py). The run's secret comes from the shell once (`Seeded`) and is journaled, so
the machine stays pure and a replay draws the same checks. `verdicts.settle` decides each
contribution; FINALIZE asks for the second replays and disputes it calls for, each with its own
deadline, so a round settles within three verdict timeouts whatever members send.

Every batch handed out is, when its round ends, either counted as accepted or carried over to
be handed out first in the next round: none is skipped. A round is finalized once: the only way
out of FINALIZE is `_finalize`, which also moves the phase. Each member's optimizer state hash
advances only with its accepted payloads (`State.states`), so a commit must start from that
state or a fresh one: validators replay from the state a commit names, and this keeps a node
from swapping in a different state between rounds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from coordinator import membership, rounds, verdicts
from coordinator.state import (
    CommitInfo,
    CommitSeen,
    Effect,
    Event,
    HeartbeatSeen,
    JoinRequest,
    LeaveRequest,
    Member,
    Outcome,
    PauseRequest,
    PayloadChecked,
    Phase,
    Publish,
    RecordRound,
    Removed,
    Restarted,
    ResumeRequest,
    Seeded,
    State,
    VerdictInfo,
    VerdictSeen,
)
from coordinator.verdicts import Ask, Settled, Settlement
from p2p.messages import Recheck, Reveal, RoundEnd
from protocol.checks import check_seed, choose_checks, choose_second
from protocol.commitments import commitment_root

# (phase, next phase) pairs `_change_phase` allows, as h11's transition table.
TRANSITIONS = {
    (Phase.WAITING, Phase.WARMUP),
    (Phase.WARMUP, Phase.TRAINING),
    (Phase.WARMUP, Phase.WAITING),
    (Phase.TRAINING, Phase.FINALIZE),
    (Phase.FINALIZE, Phase.COOLDOWN),
    (Phase.COOLDOWN, Phase.TRAINING),
    (Phase.COOLDOWN, Phase.WARMUP),
    (Phase.COOLDOWN, Phase.WAITING),
    (Phase.COOLDOWN, Phase.FINISHED),
    (Phase.PAUSED, Phase.WAITING),
} | {(p, Phase.PAUSED) for p in Phase if p not in (Phase.PAUSED, Phase.FINISHED)}


@dataclass(frozen=True)
class Result:
    state: State
    effects: tuple[Effect, ...] = ()
    outcome: Outcome = Outcome.APPLIED


def step(state: State, event: Event | None, now: float) -> Result:
    """Apply `event` (if any), then move phases as far as `now` allows."""
    applied = apply(state, event, now) if event is not None else Result(state)
    ticked = tick(applied.state, now)
    return Result(ticked.state, applied.effects + ticked.effects, applied.outcome)


# --- events ---


def apply(s: State, event: Event, now: float) -> Result:
    handler = {
        Seeded: _seeded,
        JoinRequest: _join,
        HeartbeatSeen: _heartbeat,
        CommitSeen: _commit,
        PayloadChecked: _payload_checked,
        VerdictSeen: _verdict,
        LeaveRequest: _leave,
        Restarted: _restarted,
        PauseRequest: _pause,
        ResumeRequest: _resume,
    }[type(event)]
    return handler(s, event, now)


def _seeded(s: State, e: Seeded, now: float) -> Result:
    if s.secret or len(e.secret) < 32:
        return Result(s, outcome=Outcome.IGNORED if s.secret else Outcome.INVALID)
    return Result(replace(s, secret=e.secret))


def _join(s: State, e: JoinRequest, now: float) -> Result:
    if e.key in s.banned:
        return Result(s, outcome=Outcome.INVALID)
    if s.phase == Phase.FINISHED:
        return Result(s, outcome=Outcome.IGNORED)
    known = s.members.get(e.key)
    if known is not None:  # a repeated announcement: fresher addresses, same membership
        member = replace(known, addrs=tuple(e.addrs), last_seen=now)
        return Result(replace(s, members={**s.members, e.key: member}), outcome=Outcome.IGNORED)
    member = Member(e.key, tuple(e.addrs), now, e.model_hash, joined_at=now)
    return Result(replace(s, members={**s.members, e.key: member}))


def _heartbeat(s: State, e: HeartbeatSeen, now: float) -> Result:
    m = s.members.get(e.key)
    if m is None:
        return Result(s, outcome=Outcome.IGNORED)
    m = replace(m, last_seen=now, model_hash=e.model_hash, reported_round=e.round)
    return Result(replace(s, members={**s.members, e.key: m}))


def _current(s: State, number: int, phases: tuple[Phase, ...]) -> Outcome | None:
    """Why an event for round `number` cannot be applied now, or None when it can."""
    if s.round is None or number != s.round.number:
        return Outcome.INVALID if s.round is None or number > s.round.number else Outcome.IGNORED
    return None if s.phase in phases else Outcome.IGNORED


def _commit(s: State, e: CommitSeen, now: float) -> Result:
    upcoming = s.upcoming is not None and e.round == s.upcoming.number
    why = None if upcoming else _current(s, e.round, (Phase.TRAINING,))
    r = s.round_numbered(e.round)
    if why is not None or (not upcoming and now >= r.deadline):
        return Result(s, outcome=why or Outcome.IGNORED)
    if not r.batches.get(e.key) or e.key in r.commits:
        return Result(s, outcome=Outcome.IGNORED)  # not given batches: nothing to contribute
    if e.model_hash != r.model_hash:
        return Result(s, outcome=Outcome.INVALID)
    # an upcoming round's commits are linked to the member's state when it becomes current
    chained, stale = (True, False) if upcoming else rounds.link(s, e.key, e.state_before)
    info = CommitInfo(
        e.payload_hash, e.size, e.model_hash, e.loss, now, e.state_after, chained, e.state_before, stale
    )
    r = replace(r, commits={**r.commits, e.key: info})
    members = dict(s.members)
    if e.key in members:
        members[e.key] = replace(members[e.key], last_seen=now)
    s = replace(s, upcoming=r) if upcoming else replace(s, round=r)
    return Result(replace(s, members=members))


def _payload_checked(s: State, e: PayloadChecked, now: float) -> Result:
    upcoming = s.upcoming is not None and e.round == s.upcoming.number
    why = None if upcoming else _current(s, e.round, (Phase.TRAINING, Phase.FINALIZE))
    if why is not None:
        return Result(s, outcome=why)
    r = s.round_numbered(e.round)
    if e.key not in r.commits or e.key in r.checks:
        return Result(s, outcome=Outcome.IGNORED)
    r = replace(r, checks={**r.checks, e.key: e.ok})
    return Result(replace(s, upcoming=r) if upcoming else replace(s, round=r))


def _verdict(s: State, e: VerdictSeen, now: float) -> Result:
    why = _current(s, e.round, (Phase.FINALIZE,))
    if why is not None:
        return Result(s, outcome=why)
    r = s.round
    asked = (
        r.validators.get(e.validator) == e.target
        or r.seconds.get(e.target, (None,))[0] == e.validator
        or (e.target in r.disputes and e.validator in r.batches and e.validator != e.target)
    )
    if not asked:
        return Result(s, outcome=Outcome.INVALID)
    if (e.validator, e.target) in r.verdicts:
        return Result(s, outcome=Outcome.IGNORED)
    info = VerdictInfo(e.accept, e.available, e.evidence if e.available else b"", e.loss)
    r = replace(r, verdicts={**r.verdicts, (e.validator, e.target): info})
    return Result(replace(s, round=r))


def _leave(s: State, e: LeaveRequest, now: float) -> Result:
    if e.key not in s.members:
        return Result(s, outcome=Outcome.IGNORED)
    members = {k: m for k, m in s.members.items() if k != e.key}
    return Result(replace(s, members=members), (Removed(e.key, "left"),))


def _restarted(s: State, e: Restarted, now: float) -> Result:
    return Result(replace(s, members={k: replace(m, last_seen=now) for k, m in s.members.items()}))


def _pause(s: State, e: PauseRequest, now: float) -> Result:
    if s.phase in (Phase.PAUSED, Phase.FINISHED):
        return Result(s, outcome=Outcome.IGNORED)
    if s.round is not None and s.phase in (Phase.TRAINING, Phase.FINALIZE):
        s = _abandon_round(s)
    elif s.phase == Phase.COOLDOWN:
        s = replace(s, round=None)  # finalized already: nothing to carry over
    s = rounds.abandon_upcoming(s)
    return Result(replace(_change_phase(s, now, Phase.PAUSED), paused_from=s.phase))


def _resume(s: State, e: ResumeRequest, now: float) -> Result:
    if s.phase != Phase.PAUSED:
        return Result(s, outcome=Outcome.IGNORED)
    return Result(replace(_change_phase(s, now, Phase.WAITING), paused_from=None))


# --- time ---


def _change_phase(s: State, now: float, new: Phase) -> State:
    assert (s.phase, new) in TRANSITIONS, f"no transition {s.phase} -> {new}"
    return replace(s, phase=new, phase_started_at=now)


def _elapsed(s: State, now: float, limit: float) -> bool:
    return now - s.phase_started_at >= limit


def tick(s: State, now: float) -> Result:
    effects: list[Effect] = []
    s = membership.expire_silent(s, now, effects)
    for _ in range(len(Phase)):  # a tick can pass several phases; each visit changes phase
        before = s.phase
        s = _TICKS[s.phase](s, now, effects)
        if s.phase == before:
            break
    return Result(s, tuple(effects))


def _tick_waiting(s: State, now: float, effects: list[Effect]) -> State:
    ready = s.secret and len(s.members) >= membership.needed(s)
    return _change_phase(s, now, Phase.WARMUP) if ready else s


def _tick_warmup(s: State, now: float, effects: list[Effect]) -> State:
    """Wait for the members that must hold the model (every member before the first round, then
    those that held it before), at most warmup_timeout_s; then drop those and the joiners that
    had that long, and start with the ready members."""
    if not s.model_hash:
        s = replace(s, model_hash=membership.agreed_hash(s))
    s = membership.mark_ready(s)
    waited_for = [m for m in s.members.values() if not m.ready and (m.ever_ready or not s.finalized_rounds)]
    if waited_for and not _elapsed(s, now, s.config.warmup_timeout_s):
        return s
    s = membership.remove(s, membership.unready(s, now), membership.NOT_READY, effects)
    if len(s.members) < membership.needed(s):
        return _change_phase(s, now, Phase.WAITING)
    if len(s.ready_members) < s.config.min_nodes:  # joiners still syncing, each on its own clock
        return s
    return _start_round(s, now, effects)


def _start_round(s: State, now: float, effects: list[Effect]) -> State:
    s, r = rounds.new_round(s, now, s.finalized_rounds, effects)
    return _change_phase(replace(s, round=r), now, Phase.TRAINING)


def _tick_training(s: State, now: float, effects: list[Effect]) -> State:
    r = s.round
    if not all(k in r.commits for k in r.workers) and now < r.deadline:
        return s
    commits = {k: c.payload_hash for k, c in r.commits.items()}
    validators = choose_checks(
        check_seed(r.check_secret, commits), r.members, sorted(commits), s.config.validation_rate
    )
    effects.append(Publish(Reveal(r.number, r.check_secret, commits, validators)))
    s = replace(s, round=replace(r, validators=validators, revealed_at=now))
    return _change_phase(rounds.announce(s, now, effects), now, Phase.FINALIZE)


def _settlements(s: State, now: float) -> dict[bytes, Settlement | Ask | None]:
    r = s.round
    # a dispute needs a strict majority of every member of the run but the target, not only of
    # the round's: members that joined after the round began cannot vote, but a coalition that
    # happens to fill a round must not decide it
    members = frozenset(s.members)
    return {t: verdicts.settle(r, t, now, s.config, s.exact, members) for t in sorted(r.commits)}


def _escalate(s: State, asks: dict[bytes, Ask], now: float, effects: list[Effect]) -> State:
    """Ask a second validator, or every other member of the round, to replay a target."""
    r, assignments = s.round, {}
    seconds, disputes = dict(r.seconds), dict(r.disputes)
    pool = [k for k in r.members if k in s.members]
    for target, ask in asks.items():
        voted = {v for v, t in r.verdicts if t == target}
        if ask.dispute:
            disputes[target] = now
            assignments[target] = [k for k in pool if k != target and k not in voted]
        else:
            w = choose_second(r.audit_secret, pool, target, voted | {r.validator_of(target)})
            seconds[target] = (w, now)
            if w is not None:
                assignments[target] = [w]
    if assignments:
        effects.append(Publish(Recheck(round=r.number, assignments=assignments)))
    return replace(s, round=replace(r, seconds=seconds, disputes=disputes))


def _tick_finalize(s: State, now: float, effects: list[Effect]) -> State:
    settled = _settlements(s, now)
    asks = {t: a for t, a in settled.items() if isinstance(a, Ask)}
    if asks:
        s = _escalate(s, asks, now, effects)
        settled = _settlements(s, now)
    if all(isinstance(x, Settlement) for x in settled.values()):
        return _finalize(s, settled, now, effects)
    return s


def _finalize(s: State, settled: dict[bytes, Settlement], now: float, effects: list[Effect]) -> State:
    r, cfg = s.round, s.config
    by = {o: {t for t, x in settled.items() if x.outcome == o} for o in Settled}
    strikes = {**s.strikes, **{t: 0 for t in by[Settled.ACCEPTED]}}
    for t, x in settled.items():
        if x.strike:
            strikes[t] = strikes.get(t, 0) + 1
            if strikes[t] >= cfg.max_unavailable:
                by[Settled.PENALIZED].add(t)
    penalized = by[Settled.PENALIZED] | {v for x in settled.values() for v in x.penalized}
    accepted = by[Settled.ACCEPTED] - penalized
    credited = {v for x in settled.values() for v in x.credited} - penalized
    rejected = set(r.commits) - accepted - penalized
    verified = {t: x.loss for t, x in settled.items() if t in accepted and x.loss is not None}
    s = membership.tally(s, {t for t in accepted if settled[t].verified}, penalized, effects)
    carried = tuple(sorted(b for k, ids in r.batches.items() if k not in accepted for b in ids))
    done = tuple(sorted(accepted))
    effects.append(
        Publish(
            RoundEnd(
                r.number,
                list(done),
                sorted(rejected),
                sorted(penalized),
                r.audit_secret,
                s.model_hash or bytes(32),
            )
        )
    )
    root = commitment_root({k: r.commits[k].payload_hash for k in done})
    losses = {k: r.commits[k].loss for k in done}
    batches = {k: len(r.batches[k]) for k in done}
    validated = tuple(sorted(credited))
    effects.append(
        RecordRound(r.number, root, done, batches, validated, tuple(sorted(penalized)), losses, verified)
    )
    s = replace(
        s,
        banned=s.banned | penalized,
        strikes={k: v for k, v in strikes.items() if k not in penalized},
        states={**s.states, **{k: r.commits[k].state_after for k in done}},
        carry_over=s.carry_over + carried,
        stale_from=rounds.not_accepted(s, r, accepted),
        accepted_batches=s.accepted_batches + sum(len(r.batches[k]) for k in done),
        finalized_rounds=s.finalized_rounds + 1,
        last_finalized=r.number,
    )
    return _change_phase(s, now, Phase.COOLDOWN)


def _tick_cooldown(s: State, now: float, effects: list[Effect]) -> State:
    in_round = [m for k, m in s.members.items() if k in s.round.batches]
    reported = all(m.reported_round == s.last_finalized for m in in_round)
    waited = now - rounds.reports_due_from(s)
    if not reported and waited < s.config.cooldown_s:
        return s
    agreed = membership.agreed_hash(s)
    # overlapped: the announced round goes on once a majority holds the model, up to a warmup's wait
    if not reported and s.upcoming is not None and not agreed and waited < s.config.warmup_timeout_s:
        return s
    s = membership.mark_ready(replace(s, model_hash=agreed, round=None))
    if s.finalized_rounds >= s.config.rounds:
        return _change_phase(s, now, Phase.FINISHED)
    s = membership.expire_joiners(s, now, effects)
    if len(s.members) < s.config.min_nodes:
        return _change_phase(rounds.abandon_upcoming(s), now, Phase.WAITING)
    if s.upcoming is not None and s.model_hash:
        # overlapped: the announced round trains on the model before this one's update, so a
        # member yet to report this one holds nothing up; it gets no batches until it does
        return _change_phase(rounds.promote(s), now, Phase.TRAINING)
    behind = any(m.ever_ready and not m.ready for m in s.members.values())
    if behind or len(s.ready_members) < s.config.min_nodes:
        return _change_phase(rounds.abandon_upcoming(s), now, Phase.WARMUP)
    return _start_round(s, now, effects)


def _abandon_round(s: State) -> State:
    """Pause mid-round: nothing of it is applied or recorded; all its batches are carried over."""
    ids = tuple(sorted(b for ids in s.round.batches.values() for b in ids))
    return replace(s, round=None, carry_over=s.carry_over + ids)


def _tick_idle(s: State, now: float, effects: list[Effect]) -> State:
    return s


_TICKS = {
    Phase.WAITING: _tick_waiting,
    Phase.WARMUP: _tick_warmup,
    Phase.TRAINING: _tick_training,
    Phase.FINALIZE: _tick_finalize,
    Phase.COOLDOWN: _tick_cooldown,
    Phase.PAUSED: _tick_idle,
    Phase.FINISHED: _tick_idle,
}
