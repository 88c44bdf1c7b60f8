"""The node's round logic as a pure machine: `step(state, event, now) -> Result(state, effects)`.

Theory of operation. Verified gossip messages, the passing of time and the results of compute
jobs come in as events; messages to publish, peers to dial and compute jobs go out as effects.
The shell (runtime.py) runs the jobs in order on one worker thread (train a round, replay a
target, apply a round, fetch a model) and feeds each job's result back as exactly one event.
Nothing here touches torch, sockets or clocks, so tests drive it with a fake clock and every
message an outsider can forge.

Only the coordinator steers: RunInfo, RoundStart, Reveal, Recheck and RoundEnd count when the
coordinator's key signed them, and are counted as refused otherwise. Round numbers only move
forward. Who checks whom arrives after commits close (Reveal, then Recheck for second replays
and disputes); the node verifies the draw against the RoundStart's commitments and reports a
draw that does not verify, but follows the coordinator, which decides the round.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from p2p.messages import (
    Commit,
    Heartbeat,
    Join,
    Message,
    Recheck,
    Reveal,
    RoundEnd,
    RoundStart,
    RunInfo,
    Verdict,
)
from protocol.checks import commitment, verify_reveal

CONTROL = (RunInfo, RoundStart, Reveal, Recheck, RoundEnd)  # obeyed from the coordinator only
HEARTBEAT_S = 2.0
JOIN_EVERY_S = 5.0  # the first repeat of an unanswered Join; each later one waits twice as long
JOIN_AT_MOST_S = 60.0
NEVER = float("-inf")
KEEP_ROUNDS = 4  # rounds remembered behind the newest
MAX_EARLY_COMMITS = 4096  # commits held for a round whose RoundStart has not arrived yet


@dataclass(frozen=True)
class RoundView:
    start: RoundStart
    commits: dict[bytes, Commit] = field(default_factory=dict)
    asked: tuple[bytes, ...] = ()  # targets this node was asked to replay, in order
    queued: frozenset[bytes] = frozenset()  # targets whose replay was handed to the shell
    validators: dict[bytes, bytes] = field(default_factory=dict)  # validator -> target, once revealed
    secret: bytes = b""  # the round's check secret, once revealed: it draws the state sampled
    revealed: bool = False
    ended: bool = False


@dataclass(frozen=True)
class NodeState:
    me: bytes
    coordinator: bytes
    validation_rate: float
    model_hash: bytes  # the model this node holds
    addrs: tuple[str, ...] = ()  # where this node listens, announced in its Join
    hardware: str = ""  # announced in its Join, for the coordinator's dashboard
    applied_round: int = -1
    admitted: bool = False
    phase: str = "starting"  # the run's phase, as the coordinator last said
    members: tuple[int, int] = (0, 0)  # (members, members needed), as the coordinator last said
    rounds: dict[int, RoundView] = field(default_factory=dict)
    early: dict[int, dict[bytes, Commit]] = field(default_factory=dict)
    dialled: frozenset[bytes] = frozenset()
    busy: int = 0  # jobs handed to the shell whose result has not come back
    last_join: float = NEVER  # no Join sent since the last admission
    join_wait: float = JOIN_EVERY_S  # until the next Join while none is answered
    last_beat: float = float("-inf")
    refused: dict[str, int] = field(default_factory=dict)  # control messages not from the coordinator
    unverified: dict[str, int] = field(default_factory=dict)  # coordinator reveals that did not check out


# --- events ---


@dataclass(frozen=True)
class Received:
    sender: bytes
    message: Message


@dataclass(frozen=True)
class Tick:
    pass


@dataclass(frozen=True)
class Trained:
    round: int
    commit: Commit | None  # None: not trained (the model could not be fetched)


@dataclass(frozen=True)
class Validated:
    verdict: Verdict | None  # None: not replayed (this node does not hold the round's model)


@dataclass(frozen=True)
class Applied:
    round: int
    model_hash: bytes | None  # None: not applied (a payload could not be fetched)


@dataclass(frozen=True)
class Synced:
    model_hash: bytes | None  # None: the model could not be fetched yet
    round: int


Event = Received | Tick | Trained | Validated | Applied | Synced


# --- effects ---


@dataclass(frozen=True)
class Publish:
    message: Message


@dataclass(frozen=True)
class Dial:
    addrs: tuple[str, ...]


@dataclass(frozen=True)
class Train:
    start: RoundStart


@dataclass(frozen=True)
class Validate:
    start: RoundStart
    target: bytes
    commit: Commit
    secret: bytes  # the round's revealed check secret


@dataclass(frozen=True)
class Apply:
    start: RoundStart
    end: RoundEnd
    commits: dict[bytes, Commit]


@dataclass(frozen=True)
class Sync:
    model_hash: bytes
    round: int
    step: int


Effect = Publish | Dial | Train | Validate | Apply | Sync
JOBS = (Train, Validate, Apply, Sync)


@dataclass(frozen=True)
class Result:
    state: NodeState
    effects: tuple[Effect, ...] = ()


def step(s: NodeState, event: Event, now: float) -> Result:
    effects: list[Effect] = []
    s = _EVENTS[type(event)](s, event, effects)
    s = _periodic(s, now, effects)
    busy = sum(isinstance(e, JOBS) for e in effects)
    return Result(replace(s, busy=s.busy + busy), tuple(effects))


def _count(counter: dict[str, int], key: str) -> dict[str, int]:
    return {**counter, key: counter.get(key, 0) + 1}


def _periodic(s: NodeState, now: float, effects: list[Effect]) -> NodeState:
    if s.admitted and s.last_join != NEVER:
        s = replace(s, last_join=NEVER, join_wait=JOIN_EVERY_S)  # dropped later, it joins at once
    elif not s.admitted and now - s.last_join >= s.join_wait:
        wait = s.join_wait if s.last_join == NEVER else min(2 * s.join_wait, JOIN_AT_MOST_S)
        s = replace(s, last_join=now, join_wait=wait)
        effects.append(Publish(Join(addrs=list(s.addrs), hardware=s.hardware)))
    if now - s.last_beat >= HEARTBEAT_S:
        s = replace(s, last_beat=now)
        effects.append(Publish(Heartbeat(round=s.applied_round, model_hash=s.model_hash)))
    return s


def _received(s: NodeState, e: Received, effects: list[Effect]) -> NodeState:
    m = e.message
    if isinstance(m, CONTROL) and e.sender != s.coordinator:
        return replace(s, refused=_count(s.refused, type(m).__name__))
    if isinstance(m, Join):
        if e.sender == s.me or e.sender in s.dialled or not m.addrs:
            return s
        effects.append(Dial(tuple(m.addrs[:4])))
        return replace(s, dialled=s.dialled | {e.sender})
    handler = _MESSAGES.get(type(m))
    return handler(s, m, e.sender, effects) if handler else s


def _run_info(s: NodeState, info: RunInfo, sender: bytes, effects: list[Effect]) -> NodeState:
    admitted = s.admitted and info.phase != "waiting"
    s = replace(s, phase=info.phase, members=(info.members, info.needed), admitted=admitted)
    behind = info.model_hash != bytes(32) and info.model_hash != s.model_hash
    # a joiner syncs while the others train; never in cooldown, where the run's agreed model is
    # still the one before the round just finalized, which this node may already have moved past
    if behind and info.phase in SYNC_PHASES and not s.busy:
        effects.append(Sync(info.model_hash, info.last_finalized, info.step))
    return s


SYNC_PHASES = ("warmup", "waiting", "training", "finalize")


def _round_start(s: NodeState, rs: RoundStart, sender: bytes, effects: list[Effect]) -> NodeState:
    if rs.round <= max(s.rounds, default=-1):
        return s  # a restarted coordinator's repeat: the round is already under way here
    early = {k: c for k, c in s.early.get(rs.round, {}).items() if k in rs.batches}
    rounds = {n: v for n, v in s.rounds.items() if n >= rs.round - KEEP_ROUNDS}
    rounds[rs.round] = RoundView(rs, early)
    s = replace(s, rounds=rounds, early={n: c for n, c in s.early.items() if n > rs.round})
    if s.me not in rs.members:
        return replace(s, admitted=False)
    if rs.batches.get(s.me):
        effects.append(Train(rs))
    return replace(s, admitted=True)


def _commit(s: NodeState, c: Commit, sender: bytes, effects: list[Effect]) -> NodeState:
    view = s.rounds.get(c.round)
    if view is None:
        newest = max(s.rounds, default=-1)
        held = s.early.get(c.round, {})
        if newest < c.round <= newest + 2 and len(held) < MAX_EARLY_COMMITS and sender not in held:
            return replace(s, early={**s.early, c.round: {**held, sender: c}})
        return s
    if sender not in view.start.batches or sender in view.commits:
        return s
    view = replace(view, commits={**view.commits, sender: c})
    return _queue_replays(s, view, effects)


def _reveal(s: NodeState, reveal: Reveal, sender: bytes, effects: list[Effect]) -> NodeState:
    view = s.rounds.get(reveal.round)
    if view is None or view.revealed:
        return s
    rs = view.start
    drawn = (rs.check_commitment, reveal.secret, reveal.commits, rs.members, s.validation_rate)
    if not verify_reveal(*drawn, reveal.validators):
        s = replace(s, unverified=_count(s.unverified, "Reveal"))
    target = reveal.validators.get(s.me)
    asked = view.asked + ((target,) if target is not None and target not in view.asked else ())
    view = replace(view, revealed=True, asked=asked, validators=dict(reveal.validators), secret=reveal.secret)
    return _queue_replays(s, view, effects)


def _recheck(s: NodeState, m: Recheck, sender: bytes, effects: list[Effect]) -> NodeState:
    view = s.rounds.get(m.round)
    if view is None:
        return s
    new = tuple(
        t for t, validators in sorted(m.assignments.items()) if s.me in validators and t not in view.asked
    )
    return _queue_replays(s, replace(view, asked=view.asked + new), effects) if new else s


def _queue_replays(s: NodeState, view: RoundView, effects: list[Effect]) -> NodeState:
    """Hand the shell every asked replay whose target's commit has arrived, once each, once the
    round's secret is revealed (it draws what of the target's state is checked)."""
    ready = [t for t in view.asked if t in view.commits and t not in view.queued] if view.revealed else []
    effects.extend(Validate(view.start, t, view.commits[t], view.secret) for t in ready)
    view = replace(view, queued=view.queued | set(ready))
    return replace(s, rounds={**s.rounds, view.start.round: view})


def _round_end(s: NodeState, end: RoundEnd, sender: bytes, effects: list[Effect]) -> NodeState:
    view = s.rounds.get(end.round)
    if view is None or view.ended:
        return s
    if commitment(end.audit_secret) != view.start.audit_commitment:
        s = replace(s, unverified=_count(s.unverified, "RoundEnd"))
    effects.append(Apply(view.start, end, dict(view.commits)))
    return replace(s, rounds={**s.rounds, end.round: replace(view, ended=True)})


def _done(s: NodeState) -> NodeState:
    return replace(s, busy=max(0, s.busy - 1))


def _trained(s: NodeState, e: Trained, effects: list[Effect]) -> NodeState:
    if e.commit is not None:
        effects.append(Publish(e.commit))
    return _done(s)


def _validated(s: NodeState, e: Validated, effects: list[Effect]) -> NodeState:
    if e.verdict is not None:
        effects.append(Publish(e.verdict))
    return _done(s)


def _applied(s: NodeState, e: Applied, effects: list[Effect]) -> NodeState:
    if e.model_hash is None:
        return _done(s)
    s = replace(s, model_hash=e.model_hash, applied_round=e.round)
    effects.append(Publish(Heartbeat(round=e.round, model_hash=e.model_hash)))
    return _done(s)


def _synced(s: NodeState, e: Synced, effects: list[Effect]) -> NodeState:
    if e.model_hash is None:
        return _done(s)
    effects.append(Publish(Heartbeat(round=e.round, model_hash=e.model_hash)))
    return _done(replace(s, model_hash=e.model_hash, applied_round=e.round))


_MESSAGES = {
    RunInfo: _run_info,
    RoundStart: _round_start,
    Commit: _commit,
    Reveal: _reveal,
    Recheck: _recheck,
    RoundEnd: _round_end,
}
_EVENTS = {
    Received: _received,
    Tick: lambda s, e, effects: s,
    Trained: _trained,
    Validated: _validated,
    Applied: _applied,
    Synced: _synced,
}
