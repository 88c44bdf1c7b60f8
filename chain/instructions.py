"""Instruction builders: the one place transactions' instructions are made, for the client, the
simulator and the tests alike. Encoding goes through anchorpy's `Program` over the IDL (offline:
no RPC is touched), so the bytes are exactly what an Anchor client would send."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path

from anchorpy import Context, Idl, Program, Provider, Wallet
from solana.rpc.async_api import AsyncClient
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, create_account
from spl.token.constants import TOKEN_PROGRAM_ID
from spl.token.instructions import (
    InitializeMintParams,
    create_idempotent_associated_token_account,
    get_associated_token_address,
    initialize_mint,
)

from chain import spec
from chain.state import Member, Mode, RunParams, RunState, members_from_decoded, run_from_decoded

IDL_PATH = Path(__file__).resolve().parent / "idl" / "eranos.json"
PROGRAM_ID = Pubkey.from_string(spec.PROGRAM_ID)
SYSTEM_PROGRAM_ID = Pubkey.from_string(spec.SYSTEM_PROGRAM)
MEMBER_TABLE_SIZE = spec.account_size(spec.MEMBER_TABLE)
RUN_SIZE = spec.account_size(spec.RUN)


@functools.lru_cache(maxsize=8)
def program(program_id: Pubkey = PROGRAM_ID) -> Program:
    """anchorpy's Program over the IDL; its provider's URL is never contacted by the builders."""
    idl = Idl.from_json(IDL_PATH.read_text())
    provider = Provider(AsyncClient("http://127.0.0.1:0"), Wallet(Keypair()))
    return Program(idl, program_id, provider)


def run_address(run_id: int, authority: Pubkey, program_id: Pubkey = PROGRAM_ID) -> tuple[Pubkey, int]:
    """A run's address: its id is its authority's, so nobody else can take it first."""
    seeds = [spec.RUN_SEED, bytes(authority), run_id.to_bytes(8, "little")]
    return Pubkey.find_program_address(seeds, program_id)


def bitmap(slots: Iterable[int], member_count: int) -> bytes:
    """The record_round bitmap: bit i (least significant first) set for each slot in `slots`."""
    out = bytearray((member_count + 7) // 8)
    for slot in slots:
        if not 0 <= slot < member_count:
            raise ValueError(f"slot {slot} is outside the member table (count {member_count})")
        out[slot // 8] |= 1 << (slot % 8)
    return bytes(out)


def _ix(name: str, args: list, accounts: dict[str, Pubkey], program_id: Pubkey) -> Instruction:
    return program(program_id).instruction[name](*args, ctx=Context(accounts=accounts))


def _params(p: RunParams):
    p.check()
    return program().type["RunParams"](**p.__dict__)


def create_member_table(
    payer: Pubkey, table: Pubkey, lamports: int, program_id: Pubkey = PROGRAM_ID
) -> Instruction:
    """The member table is too large for a CPI to allocate, so the client creates it."""
    return create_account(
        CreateAccountParams(
            from_pubkey=payer, to_pubkey=table, lamports=lamports, space=MEMBER_TABLE_SIZE, owner=program_id
        )
    )


def create_mint(
    payer: Pubkey, mint: Pubkey, lamports: int, authority: Pubkey, decimals: int
) -> list[Instruction]:
    return [
        create_account(
            CreateAccountParams(
                from_pubkey=payer,
                to_pubkey=mint,
                lamports=lamports,
                space=spec.MINT_SIZE,
                owner=TOKEN_PROGRAM_ID,
            )
        ),
        initialize_mint(
            InitializeMintParams(
                decimals=decimals,
                program_id=TOKEN_PROGRAM_ID,
                mint=mint,
                mint_authority=authority,
                freeze_authority=None,
            )
        ),
    ]


def initialize_run(
    authority: Pubkey,
    run_id: int,
    table: Pubkey,
    mint: Pubkey,
    mode: Mode,
    params: RunParams,
    program_id: Pubkey = PROGRAM_ID,
) -> Instruction:
    run, _ = run_address(run_id, authority, program_id)
    accounts = {
        "authority": authority,
        "run": run,
        "members": table,
        "mint": mint,
        "system_program": SYSTEM_PROGRAM_ID,
    }
    return _ix("initialize_run", [run_id, int(mode), _params(params)], accounts, program_id)


def update_run(
    authority: Pubkey, run: Pubkey, params: RunParams, paused: bool, program_id: Pubkey = PROGRAM_ID
) -> Instruction:
    return _ix("update_run", [_params(params), paused], {"authority": authority, "run": run}, program_id)


def authorize_node(
    authority: Pubkey, run: RunState, node: Pubkey, program_id: Pubkey = PROGRAM_ID
) -> Instruction:
    accounts = {"authority": authority, "run": run.address, "members": run.members}
    return _ix("authorize_node", [node], accounts, program_id)


def revoke_node(
    authority: Pubkey, run: RunState, node: Pubkey, program_id: Pubkey = PROGRAM_ID
) -> Instruction:
    accounts = {"authority": authority, "run": run.address, "members": run.members}
    return _ix("revoke_node", [node], accounts, program_id)


def join(node: Pubkey, run: RunState, program_id: Pubkey = PROGRAM_ID) -> Instruction:
    accounts = {"node": node, "run": run.address, "members": run.members, "system_program": SYSTEM_PROGRAM_ID}
    return _ix("join", [], accounts, program_id)


def record_round(
    authority: Pubkey,
    run: RunState,
    round_: int,
    root: bytes,
    contributed: bytes,
    validated: bytes,
    penalized: bytes,
    batches: bytes,
    program_id: Pubkey = PROGRAM_ID,
) -> Instruction:
    if len(root) != 32:
        raise ValueError("the round root is 32 bytes")
    accounts = {"authority": authority, "run": run.address, "members": run.members}
    args = [round_, list(root), contributed, validated, penalized, batches]
    return _ix("record_round", args, accounts, program_id)


def token_account(owner: Pubkey, mint: Pubkey) -> Pubkey:
    return get_associated_token_address(owner, mint)


def claim(node: Pubkey, run: RunState, amount: int, program_id: Pubkey = PROGRAM_ID) -> list[Instruction]:
    """Create the node's associated token account if missing, then claim into it."""
    accounts = {
        "node": node,
        "run": run.address,
        "members": run.members,
        "mint": run.mint,
        "token_account": token_account(node, run.mint),
        "token_program": TOKEN_PROGRAM_ID,
    }
    return [
        create_idempotent_associated_token_account(node, node, run.mint),
        _ix("claim", [amount], accounts, program_id),
    ]


def leave(node: Pubkey, run: RunState, program_id: Pubkey = PROGRAM_ID) -> Instruction:
    return _ix("leave", [], {"node": node, "run": run.address, "members": run.members}, program_id)


def withdraw_stake(node: Pubkey, run: RunState, program_id: Pubkey = PROGRAM_ID) -> Instruction:
    return _ix("withdraw_stake", [], {"node": node, "run": run.address, "members": run.members}, program_id)


def _decode(name: str, data: bytes, program_id: Pubkey):
    struct = next(s for s in spec.ACCOUNTS if s.name == name)
    if len(data) != spec.account_size(struct) or data[:8] != spec.account_discriminator(name):
        raise ValueError(f"not a {name} account ({len(data)} bytes, discriminator {data[:8].hex()})")
    return program(program_id).account[name].coder.accounts.decode(data)


def decode_run(address: Pubkey, data: bytes, program_id: Pubkey = PROGRAM_ID) -> RunState:
    return run_from_decoded(address, _decode("Run", data, program_id))


def decode_members(data: bytes, count: int, program_id: Pubkey = PROGRAM_ID) -> list[Member]:
    return members_from_decoded(_decode("MemberTable", data, program_id), count)
