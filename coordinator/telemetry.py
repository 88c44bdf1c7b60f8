"""What the coordinator measures about its run, for the dashboard, /status.json, /metrics and
the event log: counts by outcome, losses per round, each member's record, and how long each phase
of each round took. Fed by the service after every step; it never changes the run."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from coordinator import membership
from coordinator.state import (
    CommitSeen,
    Event,
    PayloadChecked,
    Phase,
    RecordRound,
    Removed,
    State,
    VerdictSeen,
)
from protocol.events import EventLog

KEEP_PHASES = 512  # phase spans kept for the dashboard's timeline
KEEP_GONE = 256  # departed members still shown, with why they left
MAX_HARDWARE = 64  # characters of a member's self-described hardware kept (it is theirs to say)


@dataclass
class MemberRecord:
    accepted: int = 0  # rounds its contribution was accepted
    rejected: int = 0  # replays that rejected its contribution
    penalized: int = 0
    validations: int = 0  # checks it was credited for
    hardware: str = ""
    utilization: float | None = None  # share of its wall time on its own batches, as it says


@dataclass
class Telemetry:
    events: EventLog = field(default_factory=lambda: EventLog(None, "coordinator"))
    outcomes: Counter = field(default_factory=Counter)
    removed: Counter = field(default_factory=Counter)
    checks: Counter = field(default_factory=Counter)  # what validation found, by result
    payload_bytes: deque = field(default_factory=lambda: deque(maxlen=64))  # the latest payloads' sizes
    round_bytes: dict[int, list[int]] = field(default_factory=dict)  # round -> payload sizes
    losses: dict[int, float] = field(default_factory=dict)  # round -> mean self-reported loss
    verified_losses: dict[int, float] = field(default_factory=dict)  # round -> mean replayed loss
    penalties: int = 0
    records: dict[bytes, MemberRecord] = field(default_factory=dict)
    gone: dict[bytes, tuple[str, float]] = field(default_factory=dict)  # key -> (why, when)
    phases: deque = field(default_factory=lambda: deque(maxlen=KEEP_PHASES))  # (round, phase, start, seconds)

    def member(self, key: bytes) -> MemberRecord:
        return self.records.setdefault(key, MemberRecord())

    def payload(self, round: int, size: int) -> None:
        self.payload_bytes.append(size)
        self.round_bytes.setdefault(round, []).append(size)
        while len(self.round_bytes) > KEEP_PHASES:
            self.round_bytes.pop(min(self.round_bytes))

    def add_losses(self, record: RecordRound) -> None:
        for into, losses in ((self.losses, record.losses), (self.verified_losses, record.verified_losses)):
            if losses:
                into[record.round] = sum(losses.values()) / len(losses)

    def phase_changed(self, before: State, after: State) -> None:
        """The span of the phase `before` was in, once `after` has left it."""
        if after.phase == before.phase and after.phase_started_at == before.phase_started_at:
            return
        if not before.phase_started_at:  # the initial state's phase never started at a time
            return
        number = before.round.number if before.round is not None else before.next_round
        seconds = after.phase_started_at - before.phase_started_at
        self.phases.append((number, before.phase.value, before.phase_started_at, seconds))
        self.events.write(before.phase.value, number, before.phase_started_at, seconds)

    def applied(self, event: Event, state: State) -> None:
        """Count what an event the machine applied says about checks and members."""
        if isinstance(event, VerdictSeen):
            self.checks[_verdict_result(event)] += 1
            if event.available and not event.accept:
                self.member(event.target).rejected += 1
        elif isinstance(event, PayloadChecked) and event.ok is not True:
            self.checks["payload invalid" if event.ok is False else "payload withheld"] += 1
        elif isinstance(event, CommitSeen) and state.round is not None:
            commit = state.round.commits.get(event.key)
            if commit is not None and not commit.chained:
                self.checks["state chain broken"] += 1

    def recorded(self, record: RecordRound) -> None:
        self.penalties += len(record.penalized)
        self.add_losses(record)
        for key in record.contributed:
            self.member(key).accepted += 1
        for key in record.validated:
            self.member(key).validations += 1
        for key in record.penalized:
            self.member(key).penalized += 1

    def removed_member(self, effect: Removed, now: float) -> None:
        self.removed[effect.reason] += 1
        self.gone[effect.key] = (effect.reason, now)
        while len(self.gone) > KEEP_GONE:
            self.gone.pop(next(iter(self.gone)))

    def joined(self, key: bytes, hardware: str) -> None:
        self.gone.pop(key, None)
        self.member(key).hardware = "".join(c for c in hardware[:MAX_HARDWARE] if c.isprintable())


def _verdict_result(v: VerdictSeen) -> str:
    return "replay accepted" if v.accept else "replay rejected" if v.available else "unavailable"


def member_rows(state: State, telemetry: Telemetry, points: dict[bytes, int], now: float) -> list[dict]:
    """The dashboard's member table: every member, then those that left (and why)."""
    batches = state.round.batches if state.round is not None else {}
    rows = []
    for key, m in state.members.items():
        status = "active" if m.ready else "syncing"
        if state.round is not None and key in state.round.commits:
            status = "committed"
        rows.append(_row(key, status, telemetry, points, batches, now - m.last_seen, m.addrs, m.throughput))
    for key, (why, when) in telemetry.gone.items():
        if key not in state.members:
            rows.append(_row(key, f"removed: {why}", telemetry, points, {}, now - when, (), 0.0))
    return rows


def _row(key, status, telemetry, points, batches, ago, addrs, throughput) -> dict:
    r = telemetry.records.get(key, MemberRecord())
    return {
        "key": key.hex(),
        "address": addrs[0] if addrs else "",
        "status": status,
        "batches": len(batches.get(key, ())),
        "accepted": r.accepted,
        "rejected": r.rejected,
        "penalized": r.penalized,
        "validations": r.validations,
        "points": points.get(key),
        "throughput": round(throughput, 3),
        "last_seen_s": round(ago, 1),
        "hardware": r.hardware,
        "utilization": r.utilization,
    }


def run_header(state: State) -> dict:
    up = state.upcoming
    return {
        "phase": state.phase.value,
        "why": membership.why(state),
        "round": state.round.number if state.round is not None else state.next_round,
        "step": state.finalized_rounds,
        "model_hash": state.model_hash.hex() if state.model_hash else "",
        "finished": state.phase == Phase.FINISHED,
        "overlap": state.config.overlap,
        # overlapped: the next round, trained while this one is checked, and its commits so far
        "upcoming": None
        if up is None
        else {"round": up.number, "commits": len(up.commits), "workers": len(up.workers)},
    }


def snapshot(service) -> dict:
    """Everything the dashboard, the live view and /metrics show, as plain JSON values."""
    s, m, now = service.state, service.metrics, service.clock()
    sub = service.submitter.status if service.submitter else None
    recent = list(m.payload_bytes)
    points = service.roster.points if service.roster else {}
    return {
        "run": service.config.run.name,
        **run_header(s),
        "finalized_rounds": s.finalized_rounds,
        "last_finalized": s.last_finalized,
        "members": len(s.members),
        "needed": membership.needed(s),
        "ready_members": len(s.ready_members),
        "banned": len(s.banned),
        "loss": m.verified_losses[max(m.verified_losses)] if m.verified_losses else None,
        "verified_losses": {str(k): v for k, v in sorted(m.verified_losses.items())},
        "self_reported_loss": m.losses[max(m.losses)] if m.losses else None,
        "losses": {str(k): v for k, v in sorted(m.losses.items())},
        "bytes_per_step": sum(recent) / len(recent) if recent else None,
        "bytes_per_round": {str(r): sum(v) / len(v) for r, v in sorted(m.round_bytes.items())},
        "penalties": m.penalties,
        "accepted_batches": s.accepted_batches,
        "carried_over_batches": len(s.carry_over),
        "chain_recorded": sub.last_recorded if sub else None,
        "chain_pending": service.submitter.pending if service.submitter else 0,
        "chain_last_error": sub.last_error if sub else "",
        "chain_error_at": sub.error_at if sub else None,
        "chain_cleared_at": sub.cleared_at if sub else None,
        "chain_failed_rounds": {str(k): v for k, v in sub.failed.items()} if sub else {},
        "event_outcomes": dict(m.outcomes),
        "removed": dict(m.removed),
        "refused_joins": dict(service.roster.refused) if service.roster else {},
        "checks": dict(m.checks),
        "rejected_messages": {str(k): v for k, v in service.host.inbox.rejected.items()},
        "member_table": member_rows(s, m, points, now),
        "utilization": _mean([m.records[k].utilization for k in s.members if k in m.records]),
        "timeline": [list(p) for p in list(m.phases)[-120:]],
        "now": now,
    }


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None
