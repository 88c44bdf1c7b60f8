"""Who is in the run, for the round machine: silence and misses, the agreed model, readiness,
throughput from verified work, removals and bans. Pure functions of the state."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from coordinator.state import Effect, Phase, Removed, State

THROUGHPUT_EWMA = 0.5
NOT_READY = "not ready within the warmup"  # why a member without the model was removed


def remove(s: State, keys: list[bytes], reason: str, effects: list[Effect]) -> State:
    """`keys` leave the run, each with a Removed effect giving `reason`."""
    if not keys:
        return s
    effects.extend(Removed(k, reason) for k in sorted(keys))
    gone = set(keys)
    return replace(s, members={k: m for k, m in s.members.items() if k not in gone})


def expire_silent(s: State, now: float, effects: list[Effect]) -> State:
    if s.phase == Phase.FINISHED:
        return s
    limit = s.config.heartbeat_timeout_s
    return remove(
        s, [k for k, m in s.members.items() if now - m.last_seen > limit], "heartbeat timeout", effects
    )


def expire_joiners(s: State, now: float, effects: list[Effect]) -> State:
    """At a round boundary, joiners still without the model warmup_timeout_s after joining leave
    (never mid-round: a round's disputes are decided among the members it started with)."""
    late = [k for k in unready(s, now) if not s.members[k].ever_ready]
    return remove(s, late, NOT_READY, effects)


def unready(s: State, now: float) -> list[bytes]:
    """Members without the run's model that had their time: those that held it before, and
    joiners warmup_timeout_s after joining."""
    limit = s.config.warmup_timeout_s
    return [k for k, m in s.members.items() if not m.ready and (m.ever_ready or now - m.joined_at >= limit)]


def agreed_hash(s: State) -> bytes:
    """The model hash a strict majority of the members that held the run's model report for the
    last finalized round, so a minority cannot choose the model the others must hold, and joiners
    still syncing do not vote. Before anyone held it, or once every such member is gone (dropped
    by an overloaded run), the members that report the last round vote, at least min_nodes of
    them agreeing: the run's model is not lost while members that hold it are in the run."""
    voters = [m for m in s.members.values() if m.ever_ready]
    floor = 1
    if not voters:
        voters = [m for m in s.members.values() if m.reported_round == s.last_finalized and m.model_hash]
        floor = s.config.min_nodes if s.last_finalized >= 0 else 1
    reports = Counter(m.model_hash for m in voters if m.reported_round == s.last_finalized and m.model_hash)
    top = max(reports, key=lambda h: (reports[h], h), default=b"")
    return top if 2 * reports[top] > len(voters) and reports[top] >= floor else b""


def mark_ready(s: State) -> State:
    members = {}
    for k, m in s.members.items():
        ready = bool(s.model_hash) and m.model_hash == s.model_hash and m.reported_round == s.last_finalized
        members[k] = replace(m, ready=ready, ever_ready=m.ever_ready or ready)
    return replace(s, members=members)


def tally(s: State, verified: set[bytes], penalized: set[bytes], effects: list[Effect]) -> State:
    """Throughput from verified work only; misses counted; the penalized, the silent and the
    repeatedly removed leave (the last banned)."""
    r, cfg = s.round, s.config
    members, removals, banned = dict(s.members), dict(s.removals), set()
    for k in r.workers:
        if k not in members:
            continue
        if k in r.commits:
            m = members[k]
            if k in verified:
                rate = len(r.batches[k]) / max(r.commits[k].at - r.started_at, 1e-3)
                m = replace(m, throughput=THROUGHPUT_EWMA * m.throughput + (1 - THROUGHPUT_EWMA) * rate)
            members[k] = replace(m, misses=0)
            continue
        members[k] = replace(members[k], misses=members[k].misses + 1)
        if members[k].misses >= cfg.max_misses:
            effects.append(Removed(k, f"no commit in {members[k].misses} rounds"))
            del members[k]
            removals[k] = removals.get(k, 0) + 1
            if removals[k] > cfg.max_removals:
                banned.add(k)
    for k in sorted(penalized):
        if members.pop(k, None) is not None:
            effects.append(Removed(k, "penalized"))
    return replace(s, members=members, removals=removals, banned=s.banned | banned)


def unapplied(s: State) -> bool:
    """Whether a member that held the model has not reported applying the last finalized round."""
    return any(m.ever_ready and m.reported_round < s.last_finalized for m in s.members.values())


def uncommitted(s: State) -> bool:
    """Whether a worker of the round under training has not committed yet."""
    r = s.round
    return s.phase == Phase.TRAINING and r is not None and any(k not in r.commits for k in r.workers)


def needed(s: State) -> int:
    """Members the run waits for: `start_nodes` before its first round, `min_nodes` after."""
    return s.config.min_nodes if s.finalized_rounds else max(s.config.min_nodes, s.config.start_nodes)


def why(s: State) -> str:
    """What the run is waiting for, in a line ('' while rounds run)."""
    if s.phase == Phase.WAITING:
        return f"waiting for {needed(s)} members, have {len(s.members)}"
    if s.phase == Phase.WARMUP:
        return f"warming up: {len(s.ready_members)} of {len(s.members)} members hold the model"
    if s.phase == Phase.PAUSED:
        return "paused by the run's authority"
    if s.phase == Phase.FINISHED:
        return f"finished after {s.finalized_rounds} rounds"
    return ""
