"""The program's accounts as Python dataclasses, decoded with anchorpy's coder over the IDL."""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import IntEnum
from typing import Any

from solders.pubkey import Pubkey

from chain import spec


class Mode(IntEnum):
    PERMISSIONED = spec.MODE_PERMISSIONED
    PERMISSIONLESS = spec.MODE_PERMISSIONLESS


MemberStatus = IntEnum("MemberStatus", spec.STATUS)


@dataclass(frozen=True)
class RunParams:
    points_per_contribution: int = 10
    points_per_validation: int = 2
    required_stake: int = 0
    slash_amount: int = 0
    unbonding_seconds: int = spec.MIN_UNBONDING_SECONDS

    def check(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not 0 <= value < 1 << 64:
                raise ValueError(f"RunParams.{f.name} must be a u64, got {value}")


@dataclass(frozen=True)
class Member:
    slot: int
    key: Pubkey
    status: MemberStatus
    stake: int
    points_earned: int
    points_claimed: int
    joined_round: int
    unbond_at: int
    contributions: int
    validations: int
    penalties: int

    @property
    def unclaimed(self) -> int:
        return self.points_earned - self.points_claimed


@dataclass(frozen=True)
class RoundRecord:
    round: int
    root: bytes
    slot: int
    contributed: int
    validated: int
    penalized: int


@dataclass(frozen=True)
class RunState:
    address: Pubkey
    run_id: int
    authority: Pubkey
    mint: Pubkey
    members: Pubkey
    params: RunParams
    pending: RunParams | None  # update_run's params, in force from pending_at
    pending_at: int
    burned: int  # slashed lamports, locked in the Run account for good
    total_staked: int
    last_round: int
    rounds_recorded: int
    member_count: int
    active_count: int
    mode: Mode
    paused: bool
    bump: int
    recent: tuple[RoundRecord, ...]

    @property
    def last_recorded_round(self) -> int | None:
        return self.last_round if self.rounds_recorded else None


def _params(p: Any) -> RunParams:
    return RunParams(
        p.points_per_contribution,
        p.points_per_validation,
        p.required_stake,
        p.slash_amount,
        p.unbonding_seconds,
    )


def run_from_decoded(address: Pubkey, d: Any) -> RunState:
    n = d.rounds_recorded
    ring = [d.recent[i % spec.ROUND_RING] for i in range(max(0, n - spec.ROUND_RING), n)]
    recent = tuple(
        RoundRecord(r.round, bytes(r.root), r.slot, r.contributed, r.validated, r.penalized) for r in ring
    )
    return RunState(
        address=address,
        run_id=d.run_id,
        authority=d.authority,
        mint=d.mint,
        members=d.members,
        params=_params(d.params),
        pending=_params(d.pending) if d.pending_at else None,
        pending_at=d.pending_at,
        burned=d.burned,
        total_staked=d.total_staked,
        last_round=d.last_round,
        rounds_recorded=d.rounds_recorded,
        member_count=d.member_count,
        active_count=d.active_count,
        mode=Mode(d.mode),
        paused=bool(d.paused),
        bump=d.bump,
        recent=recent,
    )


def members_from_decoded(d: Any, count: int) -> list[Member]:
    return [
        Member(
            slot=i,
            key=m.key,
            status=MemberStatus(m.status),
            stake=m.stake,
            points_earned=m.points_earned,
            points_claimed=m.points_claimed,
            joined_round=m.joined_round,
            unbond_at=m.unbond_at,
            contributions=m.contributions,
            validations=m.validations,
            penalties=m.penalties,
        )
        for i, m in enumerate(d.members[:count])
    ]
