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

Every batch handed out is, when its round ends, either counted as accepted or carried over to
be handed out first in the next round: none is skipped. A round is finalized once: the only way
out of FINALIZE is `_finalize`, which also moves the phase. Each member's optimizer state hash
advances only with its accepted payloads (`State.states`), so a commit must start from that
state or a fresh one: validators replay from the state a commit names, and this keeps a node
from swapping in a different state between rounds.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, replace

from coordinator import verdicts
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
    Round,
    State,
    VerdictSeen,
)
from p2p.messages import FRESH_STATE, Recheck, RoundEnd, RoundStart
from protocol.assignment import assign_batches, choose_tiebreaker, choose_validators
from protocol.commitments import commitment_root

THROUGHPUT_EWMA = 0.5

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


def round_seed(run_seed: int, number: int) -> int:
    digest = hashlib.sha256(f"eranos/{run_seed}/{number}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def step(state: State, event: Event | None, now: float) -> Result:
    """Apply `event` (if any), then move phases as far as `now` allows."""
    applied = apply(state, event, now) if event is not None else Result(state)
    ticked = tick(applied.state, now)
    return Result(ticked.state, applied.effects + ticked.effects, applied.outcome)


# --- events ---


def apply(s: State, event: Event, now: float) -> Result:
    handler = {
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


def _join(s: State, e: JoinRequest, now: float) -> Result:
    if e.key in s.banned:
        return Result(s, outcome=Outcome.INVALID)
    if s.phase == Phase.FINISHED:
        return Result(s, outcome=Outcome.IGNORED)
    known = s.members.get(e.key)
    if known is not None:  # a repeated announcement: fresher addresses, same membership
        member = replace(known, addrs=tuple(e.addrs), last_seen=now)
        return Result(replace(s, members={**s.members, e.key: member}), outcome=Outcome.IGNORED)
    member = Member(e.key, tuple(e.addrs), now, e.model_hash)
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
    why = _current(s, e.round, (Phase.TRAINING,))
    if why is not None or now >= s.round.deadline:
        return Result(s, outcome=why or Outcome.IGNORED)
    if e.key not in s.round.batches or e.key in s.round.commits:
        return Result(s, outcome=Outcome.IGNORED)
    if e.model_hash != s.model_hash:
        return Result(s, outcome=Outcome.INVALID)
    chained = e.state_before in (FRESH_STATE, s.states.get(e.key))
    info = CommitInfo(e.payload_hash, e.size, e.model_hash, e.loss, now, e.state_after, chained)
    r = replace(s.round, commits={**s.round.commits, e.key: info})
    members = dict(s.members)
    if e.key in members:
        members[e.key] = replace(members[e.key], last_seen=now)
    return Result(replace(s, round=r, members=members))


def _payload_checked(s: State, e: PayloadChecked, now: float) -> Result:
    why = _current(s, e.round, (Phase.TRAINING, Phase.FINALIZE))
    if why is not None:
        return Result(s, outcome=why)
    if e.key not in s.round.commits or e.key in s.round.checks:
        return Result(s, outcome=Outcome.IGNORED)
    return Result(replace(s, round=replace(s.round, checks={**s.round.checks, e.key: e.ok})))


def _verdict(s: State, e: VerdictSeen, now: float) -> Result:
    why = _current(s, e.round, (Phase.TRAINING, Phase.FINALIZE))
    if why is not None:
        return Result(s, outcome=why)
    r = s.round
    assigned = r.validators.get(e.validator) == e.target or r.tiebreakers.get(e.target) == e.validator
    if not assigned:
        return Result(s, outcome=Outcome.INVALID)
    if (e.validator, e.target) in r.verdicts:
        return Result(s, outcome=Outcome.IGNORED)
    key = (e.validator, e.target)
    r = replace(r, verdicts={**r.verdicts, key: e.accept}, scores={**r.scores, key: e.score})
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
    s = _expire_silent_members(s, now, effects)
    for _ in range(len(Phase)):  # a tick can pass several phases; each visit changes phase
        before = s.phase
        s = _TICKS[s.phase](s, now, effects)
        if s.phase == before:
            break
    return Result(s, tuple(effects))


def _expire_silent_members(s: State, now: float, effects: list[Effect]) -> State:
    limit = s.config.heartbeat_timeout_s
    silent = [k for k, m in s.members.items() if now - m.last_seen > limit]
    if not silent or s.phase == Phase.FINISHED:
        return s
    effects.extend(Removed(k, "heartbeat timeout") for k in sorted(silent))
    return replace(s, members={k: m for k, m in s.members.items() if k not in silent})


def _tick_waiting(s: State, now: float, effects: list[Effect]) -> State:
    needed = s.config.min_nodes if s.finalized_rounds else max(s.config.min_nodes, s.config.start_nodes)
    return _change_phase(s, now, Phase.WARMUP) if len(s.members) >= needed else s


def _agreed_hash(s: State) -> bytes:
    """The model hash most members report for the last finalized round (ties: the smallest)."""
    reports = Counter(
        m.model_hash for m in s.members.values() if m.reported_round == s.last_finalized and m.model_hash
    )
    if not reports:
        return b""
    top = max(reports.values())
    return min(h for h, c in reports.items() if c == top)


def _mark_ready(s: State) -> State:
    members = {
        k: replace(
            m,
            ready=bool(s.model_hash)
            and m.model_hash == s.model_hash
            and m.reported_round == s.last_finalized,
        )
        for k, m in s.members.items()
    }
    return replace(s, members=members)


def _tick_warmup(s: State, now: float, effects: list[Effect]) -> State:
    if not s.model_hash:
        s = replace(s, model_hash=_agreed_hash(s))
    s = _mark_ready(s)
    all_ready = all(m.ready for m in s.members.values())
    if not all_ready and not _elapsed(s, now, s.config.warmup_timeout_s):
        return s
    if not all_ready:
        unready = sorted(k for k, m in s.members.items() if not m.ready)
        effects.extend(Removed(k, "not ready within the warmup") for k in unready)
        s = replace(s, members={k: m for k, m in s.members.items() if m.ready})
    if len(s.members) < s.config.min_nodes:
        return _change_phase(s, now, Phase.WAITING)
    return _start_round(s, now, effects)


def _start_round(s: State, now: float, effects: list[Effect]) -> State:
    cfg = s.config
    members = s.ready_members
    number, seed = s.next_round, round_seed(cfg.seed, s.next_round)
    carried = s.carry_over[: cfg.global_batch]
    fresh = max(0, cfg.global_batch - len(carried))
    batch_ids = list(carried) + list(range(s.next_batch, s.next_batch + fresh))
    weights = {k: s.members[k].throughput for k in members} if cfg.weight_by_throughput else None
    batches = assign_batches(seed, members, batch_ids, weights)
    validators = choose_validators(seed, members, cfg.validation_rate)
    deadline = now + cfg.round_timeout_s
    r = Round(
        number, s.finalized_rounds, seed, now, deadline, {k: tuple(v) for k, v in batches.items()}, validators
    )
    effects.append(
        Publish(
            RoundStart(
                round=number,
                step=s.finalized_rounds,
                seed=seed,
                members=list(members),
                batches={k: list(v) for k, v in batches.items()},
                validators=dict(validators),
                deadline=deadline,
                model_hash=s.model_hash,
            )
        )
    )
    s = replace(
        s,
        round=r,
        next_round=number + 1,
        next_batch=s.next_batch + fresh,
        carry_over=s.carry_over[len(carried) :],
    )
    return _change_phase(s, now, Phase.TRAINING)


def _tick_training(s: State, now: float, effects: list[Effect]) -> State:
    everyone = all(k in s.round.commits for k in s.round.batches)
    return _change_phase(s, now, Phase.FINALIZE) if everyone or now >= s.round.deadline else s


def _assign_tiebreakers(s: State, effects: list[Effect]) -> State:
    r = s.round
    new = {}
    for target in verdicts.contested(r):
        if target in r.tiebreakers:
            continue
        first = next(v for v, t in r.validators.items() if t == target)
        candidates = [k for k in r.members if k in s.members]
        w = choose_tiebreaker(r.seed, candidates, target, {first}) if target in candidates else None
        new[target] = w if w is not None else verdicts.NOBODY
    if not new:
        return s
    asked = {t: w for t, w in new.items() if w != verdicts.NOBODY}
    if asked:
        effects.append(Publish(Recheck(round=r.number, assignments=asked)))
    return replace(s, round=replace(r, tiebreakers={**r.tiebreakers, **new}))


def _tick_finalize(s: State, now: float, effects: list[Effect]) -> State:
    s = _assign_tiebreakers(s, effects)
    if verdicts.complete(s.round) or _elapsed(s, now, s.config.verdict_timeout_s):
        return _finalize(s, now, effects)
    return s


def _finalize(s: State, now: float, effects: list[Effect]) -> State:
    r, cfg = s.round, s.config
    d = verdicts.decide(r)
    accepted = set(d.accepted)
    carried = tuple(sorted(b for k, ids in r.batches.items() if k not in accepted for b in ids))
    members = dict(s.members)
    for k in r.batches:
        if k not in members:
            continue
        if k in r.commits:
            took = max(r.commits[k].at - r.started_at, 1e-3)
            rate = len(r.batches[k]) / took if r.batches[k] else members[k].throughput
            tp = THROUGHPUT_EWMA * members[k].throughput + (1 - THROUGHPUT_EWMA) * rate
            members[k] = replace(members[k], misses=0, throughput=tp)
        else:
            members[k] = replace(members[k], misses=members[k].misses + 1)
            if members[k].misses >= cfg.max_misses:
                effects.append(Removed(k, f"no commit in {members[k].misses} rounds"))
                del members[k]
    for k in d.penalized:
        if members.pop(k, None) is not None:
            effects.append(Removed(k, "penalized"))
    root = commitment_root({k: r.commits[k].payload_hash for k in d.accepted})
    effects.append(
        Publish(
            RoundEnd(
                round=r.number,
                accepted=list(d.accepted),
                rejected=list(d.rejected),
                penalized=list(d.penalized),
            )
        )
    )
    losses = {k: c.loss for k, c in r.commits.items() if k in accepted}
    effects.append(RecordRound(r.number, root, d.accepted, d.validated, d.penalized, losses))
    accepted_batches = sum(len(r.batches[k]) for k in d.accepted)
    s = replace(
        s,
        members=members,
        banned=s.banned | set(d.penalized),
        states={**s.states, **{k: r.commits[k].state_after for k in d.accepted}},
        carry_over=s.carry_over + carried,
        accepted_batches=s.accepted_batches + accepted_batches,
        finalized_rounds=s.finalized_rounds + 1,
        last_finalized=r.number,
    )
    return _change_phase(s, now, Phase.COOLDOWN)


def _tick_cooldown(s: State, now: float, effects: list[Effect]) -> State:
    reported = all(m.reported_round == s.last_finalized for m in s.members.values())
    if not reported and not _elapsed(s, now, s.config.cooldown_s):
        return s
    s = _mark_ready(replace(s, model_hash=_agreed_hash(s), round=None))
    if s.finalized_rounds >= s.config.rounds:
        return _change_phase(s, now, Phase.FINISHED)
    if len(s.members) < s.config.min_nodes:
        return _change_phase(s, now, Phase.WAITING)
    if not all(m.ready for m in s.members.values()):
        return _change_phase(s, now, Phase.WARMUP)
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
