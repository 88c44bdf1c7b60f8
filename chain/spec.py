"""The single source of truth for the on-chain program's interface.

`chain/codegen.py` renders this into the C header the program compiles against
(`chain/program/eranos_gen.h`) and the Anchor IDL the client reads (`chain/idl/eranos.json`), so the
two can never disagree. Conventions are Anchor's: instruction discriminator
sha256("global:<snake_name>")[:8], account discriminator sha256("account:<TypeName>")[:8], borsh
arguments, custom errors numbered from 6000 and never renumbered (append only).

Account layouts are borsh (packed) *and* C (naturally aligned) at once: every field sits at an
offset that is a multiple of its own alignment, with explicit padding fields, which `check_layout`
enforces. The C code therefore casts account data to structs without unaligned access.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

MAX_MEMBERS = 1024
ROUND_RING = 32
MINT_SIZE = 82
TOKEN_ACCOUNT_SIZE = 165
RUN_SEED = b"eranos-run"
# Bounds unbond_at = now + unbonding_seconds well inside i64.
MAX_UNBONDING_SECONDS = 10 * 365 * 86400
# A permissionless run's stake must stay slashable until a member's last round is judged and
# recorded; real runs should use hours or days, the simulator uses this floor.
MIN_UNBONDING_SECONDS = 60
# points_per_contribution times a round's batch count (one byte) must fit in u64 without a
# 128-bit multiply, which BPF lacks
MAX_POINTS_PER_BATCH = (1 << 56) - 1

# The program's fixed address; its development keypair is chain/program/program-keypair.json, so
# `solana program deploy --program-id` can put the same program at the same address on a validator.
PROGRAM_ID = "7evBcrqdHczMZgkDgDnfFQrERmyxUyBMSkNaB1zBuj3W"
SYSTEM_PROGRAM = "11111111111111111111111111111111"
TOKEN_PROGRAM = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"

MODE_PERMISSIONED, MODE_PERMISSIONLESS = 0, 1
STATUS = {"EMPTY": 0, "AUTHORIZED": 1, "ACTIVE": 2, "LEFT": 3, "REVOKED": 4, "SLASHED": 5}

PRIMITIVES = {"u8": 1, "bool": 1, "u16": 2, "u32": 4, "u64": 8, "i64": 8, "publicKey": 32}


@dataclass(frozen=True)
class Array:
    of: str
    n: int


@dataclass(frozen=True)
class Field:
    name: str
    type: str | Array


@dataclass(frozen=True)
class Struct:
    name: str
    fields: tuple[Field, ...]
    is_account: bool = False


@dataclass(frozen=True)
class AccountMeta:
    name: str
    writable: bool = False
    signer: bool = False


@dataclass(frozen=True)
class Instruction:
    name: str
    accounts: tuple[AccountMeta, ...]
    args: tuple[Field, ...]
    doc: str


@dataclass(frozen=True)
class Error:
    code: int
    name: str
    msg: str


F = Field
RUN_PARAMS = Struct(
    "RunParams",
    (
        F("points_per_contribution", "u64"),
        F("points_per_validation", "u64"),
        F("required_stake", "u64"),
        F("slash_amount", "u64"),
        F("unbonding_seconds", "u64"),
    ),
)
MEMBER = Struct(
    "Member",
    (
        F("key", "publicKey"),
        F("stake", "u64"),
        F("points_earned", "u64"),
        F("points_claimed", "u64"),
        F("joined_round", "u64"),
        F("unbond_at", "i64"),
        F("contributions", "u32"),  # accepted batches credited
        F("validations", "u32"),
        F("penalties", "u32"),
        F("status", "u8"),
        F("padding", Array("u8", 3)),
    ),
)
ROUND_RECORD = Struct(
    "RoundRecord",
    (
        F("round", "u64"),
        F("root", Array("u8", 32)),
        F("slot", "u64"),
        F("contributed", "u16"),
        F("validated", "u16"),
        F("penalized", "u16"),
        F("padding", Array("u8", 2)),
    ),
)
RUN = Struct(
    "Run",
    (
        F("run_id", "u64"),
        F("authority", "publicKey"),
        F("mint", "publicKey"),
        F("members", "publicKey"),
        F("params", "RunParams"),
        F("pending", "RunParams"),  # update_run's new params, in force from pending_at
        F("pending_at", "i64"),  # 0: nothing pending
        F("burned", "u64"),  # slashed lamports, locked in this account for good
        F("total_staked", "u64"),
        F("last_round", "u64"),
        F("rounds_recorded", "u64"),
        F("member_count", "u32"),
        F("active_count", "u32"),
        F("mode", "u8"),
        F("paused", "bool"),
        F("bump", "u8"),
        F("padding", Array("u8", 5)),
        F("recent", Array("RoundRecord", ROUND_RING)),
    ),
    is_account=True,
)
MEMBER_TABLE = Struct(
    "MemberTable",
    (F("run", "publicKey"), F("members", Array("Member", MAX_MEMBERS))),
    is_account=True,
)
TYPES = (RUN_PARAMS, MEMBER, ROUND_RECORD)
ACCOUNTS = (RUN, MEMBER_TABLE)

A = AccountMeta
_AUTHORITY_RUN_TABLE = (A("authority", signer=True), A("run", writable=True), A("members", writable=True))
_NODE_RUN_TABLE = (A("node", signer=True), A("run", writable=True), A("members", writable=True))
INSTRUCTIONS = (
    Instruction(
        "initialize_run",
        (
            A("authority", writable=True, signer=True),
            A("run", writable=True),
            A("members", writable=True),
            A("mint"),
            A("system_program"),
        ),
        (F("run_id", "u64"), F("mode", "u8"), F("params", "RunParams")),
        "Create the Run PDA and bind the pre-allocated member table and the reward mint to it.",
    ),
    Instruction(
        "update_run",
        (A("authority", signer=True), A("run", writable=True)),
        (F("params", "RunParams"), F("paused", "bool")),
        "Change the rates, stake, slash amount or unbonding period; pause or resume.",
    ),
    Instruction("authorize_node", _AUTHORITY_RUN_TABLE, (F("node", "publicKey"),), "Allow a key to join."),
    Instruction("revoke_node", _AUTHORITY_RUN_TABLE, (F("node", "publicKey"),), "Withdraw that permission."),
    Instruction(
        "join",
        (
            A("node", writable=True, signer=True),
            A("run", writable=True),
            A("members", writable=True),
            A("system_program"),
        ),
        (),
        "Become an active member; in permissionless runs this deposits the required stake.",
    ),
    Instruction(
        "record_round",
        _AUTHORITY_RUN_TABLE,
        (
            F("round", "u64"),
            F("root", Array("u8", 32)),
            F("contributed", "bytes"),
            F("validated", "bytes"),
            F("penalized", "bytes"),
            F("batches", "bytes"),
        ),
        "Record one round: credit contributors per accepted batch (`batches`: one count of 1-255 "
        "per contributed slot, in slot order) and validators, slash the penalized.",
    ),
    Instruction(
        "claim",
        (
            A("node", signer=True),
            A("run"),
            A("members", writable=True),
            A("mint", writable=True),
            A("token_account", writable=True),
            A("token_program"),
        ),
        (F("amount", "u64"),),
        "Mint up to the member's unclaimed points as reward tokens to its own token account.",
    ),
    Instruction("leave", _NODE_RUN_TABLE, (), "Stop being active; start unbonding."),
    Instruction(
        "withdraw_stake",
        (A("node", writable=True, signer=True), A("run", writable=True), A("members", writable=True)),
        (),
        "Return the remaining stake once the unbonding period has passed.",
    ),
)

_E = [
    ("InvalidInstruction", "Unknown instruction or malformed instruction data"),
    ("NotEnoughAccounts", "Fewer accounts than the instruction needs"),
    ("DuplicateAccount", "The same account was passed more than once"),
    ("MissingSigner", "A required signature is missing"),
    ("NotWritable", "An account that is written was passed read-only"),
    ("WrongOwner", "An account is owned by the wrong program"),
    ("AccountSize", "An account has the wrong size"),
    ("BadDiscriminator", "An account is not of the expected type"),
    ("WrongPda", "The run account is not the program address for its run id"),
    ("WrongMemberTable", "The member table is not the one bound to this run"),
    ("WrongProgram", "A program account is not the expected program"),
    ("AlreadyInitialized", "The account is already initialized"),
    ("Unauthorized", "The signer is not the run's authority"),
    ("InvalidMode", "Unknown run mode"),
    ("WrongMode", "Not allowed in this run's mode"),
    ("RunPaused", "The run is paused"),
    ("TableFull", "The member table is full"),
    ("NotMember", "The key is not in the member table"),
    ("NotAuthorized", "The node is not authorized to join this run"),
    ("AlreadyActive", "The member is already active"),
    ("NotActive", "The member is not active"),
    ("InsufficientStake", "Not enough lamports to deposit the required stake"),
    ("RoundNotIncreasing", "The round must be greater than the last recorded round"),
    ("BitmapLength", "A bitmap's length does not match the member count"),
    ("BitsPastMemberCount", "A bitmap sets bits past the member count"),
    ("ConflictingBits", "A penalized member cannot be credited in the same round"),
    ("MemberNotCreditable", "A bitmap names a member that is neither active nor unbonding"),
    ("Overflow", "Arithmetic overflow"),
    ("WrongMint", "The mint or token account is not the run's reward mint"),
    ("WrongTokenOwner", "The token account does not belong to the claiming member"),
    ("NothingToClaim", "The amount is zero"),
    ("ClaimExceedsEarned", "The amount exceeds the member's unclaimed points"),
    ("StillActive", "Leave the run before withdrawing stake"),
    ("StillUnbonding", "The unbonding period has not passed"),
    ("NothingToWithdraw", "No stake left to withdraw"),
    ("InvalidArgument", "An argument is out of range"),
    ("BatchCounts", "There must be one batch count of at least 1 per contributed member"),
]
ERRORS = tuple(Error(6000 + i, name, msg) for i, (name, msg) in enumerate(_E))


def instruction_discriminator(name: str) -> bytes:
    return hashlib.sha256(f"global:{name}".encode()).digest()[:8]


def account_discriminator(name: str) -> bytes:
    return hashlib.sha256(f"account:{name}".encode()).digest()[:8]


def _struct(name: str) -> Struct:
    return next(s for s in TYPES + ACCOUNTS if s.name == name)


def size_of(t: str | Array) -> int:
    if isinstance(t, Array):
        return size_of(t.of) * t.n
    if t in PRIMITIVES:
        return PRIMITIVES[t]
    return sum(size_of(f.type) for f in _struct(t).fields)


def align_of(t: str | Array) -> int:
    if isinstance(t, Array):
        return align_of(t.of)
    if t == "publicKey":
        return 1
    if t in PRIMITIVES:
        return PRIMITIVES[t]
    return max(align_of(f.type) for f in _struct(t).fields)


def offsets(struct: Struct) -> dict[str, int]:
    """Byte offset of each field, counting the 8-byte discriminator for accounts."""
    off = 8 if struct.is_account else 0
    out = {}
    for f in struct.fields:
        out[f.name] = off
        off += size_of(f.type)
    return out


def account_size(struct: Struct) -> int:
    return 8 + size_of(struct.name)


def check_layout(structs: tuple[Struct, ...] = TYPES + ACCOUNTS) -> None:
    """Raise if any packed (borsh) offset differs from the aligned (C) one."""
    for struct in structs:
        for f in struct.fields:
            if offsets(struct)[f.name] % align_of(f.type):
                raise ValueError(f"{struct.name}.{f.name} is misaligned: add padding before it")
        size = sum(size_of(f.type) for f in struct.fields)
        if size % max(align_of(f.type) for f in struct.fields):
            raise ValueError(f"{struct.name} needs trailing padding")


check_layout()
