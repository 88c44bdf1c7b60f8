"""The coordinator's state, the events it consumes and the effects it asks the shell to perform.

Everything here is plain frozen data: `machine.py` maps (state, event, now) to a new state and a
list of effects, and never touches sockets, clocks, the chain or files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from p2p.messages import FRESH_STATE, Recheck, RoundEnd, RoundStart
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


@dataclass(frozen=True)
class Round:
    number: int
    step: int  # the optimizer step every payload of the round is for
    seed: int
    started_at: float
    deadline: float
    batches: dict[bytes, tuple[int, ...]]  # member -> batch ids
    validators: dict[bytes, bytes]  # first validator -> target
    commits: dict[bytes, CommitInfo] = field(default_factory=dict)
    checks: dict[bytes, bool] = field(default_factory=dict)  # the coordinator's fetch + decode
    verdicts: dict[tuple[bytes, bytes], bool] = field(default_factory=dict)  # (validator, target)
    scores: dict[tuple[bytes, bytes], float] = field(default_factory=dict)
    tiebreakers: dict[bytes, bytes] = field(default_factory=dict)  # target -> second validator

    @property
    def members(self) -> tuple[bytes, ...]:
        return tuple(sorted(self.batches))


@dataclass(frozen=True)
class State:
    config: RoundsSection
    phase: Phase = Phase.WAITING
    phase_started_at: float = 0.0
    members: dict[bytes, Member] = field(default_factory=dict)
    round: Round | None = None
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

    @property
    def ready_members(self) -> tuple[bytes, ...]:
        return tuple(sorted(k for k, m in self.members.items() if m.ready))


# --- events (inputs) ---


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
    ok: bool  # fetched with the committed hash and decoded strictly


@dataclass(frozen=True)
class VerdictSeen:
    validator: bytes
    round: int
    target: bytes
    accept: bool
    score: float


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
    JoinRequest
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
    message: RoundStart | RoundEnd | Recheck


@dataclass(frozen=True)
class RecordRound:
    round: int
    root: bytes
    contributed: tuple[bytes, ...]
    validated: tuple[bytes, ...]
    penalized: tuple[bytes, ...]
    losses: dict[bytes, float]


@dataclass(frozen=True)
class Removed:
    key: bytes
    reason: str


Effect = Publish | RecordRound | Removed
