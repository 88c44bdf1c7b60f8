"""The coordinator's state, the events it consumes and the effects it asks the shell to perform.

Everything here is plain frozen data: `machine.py` maps (state, event, now) to a new state and a
list of effects, and never touches sockets, clocks, the chain or files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property

from p2p.messages import FRESH_STATE, Recheck, Reveal, RoundEnd, RoundStart
from protocol.run_config import RoundsSection


class Phase(StrEnum):
    WAITING = "waiting"  # fewer than min_nodes members
    WARMUP = "warmup"  # joiners fetch and verify the checkpoint
    TRAINING = "training"  # members train their batches and commit
    FINALIZE = "finalize"  # payload checks, verdicts and tie-breaks come in
    COOLDOWN = "cooldown"  # members apply the round and report their model hash
    PAUSED = "paused"
    FINISHED = "finished"


class Outcome(StrEnum):
    """What an event did: late and duplicate input is an outcome, not an exception."""

    APPLIED = "applied"
    IGNORED = "ignored"  # valid but not for now (late, duplicate, from a non-member)
    INVALID = "invalid"  # contradicts the protocol (wrong round, wrong target)


@dataclass(frozen=True)
class Member:
    key: bytes
    addrs: tuple[str, ...]
    last_seen: float
    model_hash: bytes = b""  # the last hash it reported
    reported_round: int = -1  # the round after which it reported that hash
    ready: bool = False  # holds the run's current model, may be given batches
    # held the run's model once: only such a member, falling behind, stalls the run for a warmup;
    # a joiner syncs while the others train, and has warmup_timeout_s from `joined_at` to do so
    ever_ready: bool = False
    joined_at: float = 0.0
    throughput: float = 1.0  # batches per second, measured from its commits
    misses: int = 0  # consecutive rounds without a commit


@dataclass(frozen=True)
class CommitInfo:
    payload_hash: bytes
    size: int
    model_hash: bytes
    loss: float
    at: float
    state_after: bytes  # the optimizer state the member holds if this payload is accepted
    chained: bool  # it started from the member's last accepted state, or a fresh one
    state_before: bytes = FRESH_STATE
    # overlapped rounds: it started from the state of the member's payload of the round before,
    # which was then rejected (or the member was penalized): it cannot count, and is no lie
    stale: bool = False


@dataclass(frozen=True)
class VerdictInfo:
    accept: bool
    available: bool  # the validator could fetch the target's payload and states
    evidence: bytes  # digest of the replayed gradient and loss: equal for every honest replay
    loss: float  # the target's loss as the replay computed it


@dataclass(frozen=True)
class Round:
    number: int
    step: int  # the optimizer step every payload of the round is for
    seed: int  # shuffles the batches (public)
    check_secret: bytes  # committed to in RoundStart, revealed when commits close
    audit_secret: bytes  # committed to in RoundStart, revealed in RoundEnd
    started_at: float
    deadline: float
    batches: dict[bytes, tuple[int, ...]]  # member -> batch ids (possibly none)
    model_hash: bytes = b""  # the model its members train on
    commits: dict[bytes, CommitInfo] = field(default_factory=dict)
    checks: dict[bytes, bool | None] = field(default_factory=dict)  # the coordinator's; None: unavailable
    validators: dict[bytes, bytes] = field(default_factory=dict)  # first validator -> target, once revealed
    revealed_at: float = 0.0
    verdicts: dict[tuple[bytes, bytes], VerdictInfo] = field(default_factory=dict)  # (validator, target)
    seconds: dict[bytes, tuple[bytes | None, float]] = field(default_factory=dict)  # target -> (W, asked at)
    disputes: dict[bytes, float] = field(default_factory=dict)  # target -> when every member was asked

    @property
    def members(self) -> tuple[bytes, ...]:
        return tuple(sorted(self.batches))

    def validator_of(self, target: bytes) -> bytes | None:
        """The first validator drawn for `target`, once revealed (None: it is not checked)."""
        return self._checked_by.get(target)

    @cached_property
    def _checked_by(self) -> dict[bytes, bytes]:
        # settling a round asks this for every target on every event: a scan each time made a
        # round of 1024 members cost seconds of CPU (scripts/bench_membership.py)
        checked_by: dict[bytes, bytes] = {}
        for validator, target in self.validators.items():
            checked_by.setdefault(target, validator)
        return checked_by

    @property
    def workers(self) -> tuple[bytes, ...]:
        """Members given at least one batch: only they commit, and only they hold a round open."""
        return tuple(sorted(k for k, ids in self.batches.items() if ids))


@dataclass(frozen=True)
class State:
    config: RoundsSection
    phase: Phase = Phase.WAITING
    phase_started_at: float = 0.0
    members: dict[bytes, Member] = field(default_factory=dict)
    round: Round | None = None
    # overlapped rounds: the next round, started when this one's commits closed, trained by the
    # members while this one is checked and applied; it becomes `round` at this one's cooldown
    upcoming: Round | None = None
    next_round: int = 0
    finalized_rounds: int = 0
    last_finalized: int = -1
    model_hash: bytes = b""  # the model every ready member holds; empty until first agreed
    next_batch: int = 0  # the first batch id never handed out
    carry_over: tuple[int, ...] = ()  # batches of rounds that did not count, handed out first
    accepted_batches: int = 0
    banned: frozenset[bytes] = frozenset()
    states: dict[bytes, bytes] = field(default_factory=dict)  # key -> last accepted state_after
    paused_from: Phase | None = None
    secret: bytes = b""  # the run's private randomness (Seeded); every round's secrets derive from it
    exact: bool = True  # honest replays agree to the bit: accepts must carry the same evidence
    strikes: dict[bytes, int] = field(default_factory=dict)  # consecutive rounds withheld
    removals: dict[bytes, int] = field(default_factory=dict)  # times removed for missed rounds
    # overlapped rounds: the workers of the last finalized round whose payload it did not accept
    # (rejected, or never seen): their commits to the round after may start from a state the
    # run never took, since they trained it before they learnt the outcome (stale, not a lie)
    stale_from: frozenset[bytes] = frozenset()

    @property
    def ready_members(self) -> tuple[bytes, ...]:
        return tuple(sorted(k for k, m in self.members.items() if m.ready))

    def round_numbered(self, number: int) -> Round | None:
        """The round under way or the upcoming one with this number, if any."""
        return next((r for r in (self.round, self.upcoming) if r is not None and r.number == number), None)


# --- events (inputs) ---


@dataclass(frozen=True)
class Seeded:
    """The shell's private randomness for the run, drawn once and journaled."""

    secret: bytes


@dataclass(frozen=True)
class JoinRequest:
    key: bytes  # eligibility on chain is the shell's check, before this event
    addrs: tuple[str, ...] = ()
    model_hash: bytes = b""


@dataclass(frozen=True)
class HeartbeatSeen:
    key: bytes
    round: int  # the last round this member applied (-1 before any)
    model_hash: bytes


@dataclass(frozen=True)
class CommitSeen:
    key: bytes
    round: int
    payload_hash: bytes
    size: int
    model_hash: bytes
    loss: float
    state_before: bytes = FRESH_STATE
    state_after: bytes = FRESH_STATE


@dataclass(frozen=True)
class PayloadChecked:
    key: bytes
    round: int
    ok: bool | None  # fetched, decoded strictly, stamped right; None: nobody served it


@dataclass(frozen=True)
class VerdictSeen:
    validator: bytes
    round: int
    target: bytes
    accept: bool
    score: float
    available: bool  # False: it could not fetch the target's payload or states
    evidence: bytes  # digest of its replay (the gradient and loss); empty when unavailable
    loss: float  # the target's loss as its replay computed it


@dataclass(frozen=True)
class LeaveRequest:
    key: bytes


@dataclass(frozen=True)
class Restarted:
    """The coordinator came back from a crash: members get a fresh heartbeat deadline rather
    than being dropped for the silence the coordinator itself caused."""


@dataclass(frozen=True)
class PauseRequest:
    pass


@dataclass(frozen=True)
class ResumeRequest:
    pass


Event = (
    Seeded
    | JoinRequest
    | HeartbeatSeen
    | CommitSeen
    | PayloadChecked
    | VerdictSeen
    | LeaveRequest
    | Restarted
    | PauseRequest
    | ResumeRequest
)


# --- effects (outputs) ---


@dataclass(frozen=True)
class Publish:
    message: RoundStart | Reveal | Recheck | RoundEnd


@dataclass(frozen=True)
class RecordRound:
    round: int
    root: bytes
    contributed: tuple[bytes, ...]
    batches: dict[bytes, int]  # contributor -> accepted batches (points are paid per batch)
    validated: tuple[bytes, ...]
    penalized: tuple[bytes, ...]
    losses: dict[bytes, float]  # self-reported by the accepted members
    verified_losses: dict[bytes, float] = field(default_factory=dict)  # from replays nobody contradicted


@dataclass(frozen=True)
class Removed:
    key: bytes
    reason: str


Effect = Publish | RecordRound | Removed
