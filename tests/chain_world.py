"""A local chain for tests: the program in LiteSVM, an authority, and funded node clients."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.transaction import Transaction

from chain.client import EranosClient, RpcTransport, SvmTransport
from chain.errors import ProgramError
from chain.state import Mode, RunParams
from chain.svm import ProgramSvm

SOL = 10**9
RUN_ID = 42
STAKE = SOL // 10


@dataclass
class World:
    """`rpc_url` set: the clients speak JSON-RPC to a localnet serving `svm`; unset: LiteSVM directly."""

    svm: ProgramSvm = field(default_factory=ProgramSvm)
    rpc_url: str | None = None

    def __post_init__(self) -> None:
        self.transport = RpcTransport(self.rpc_url) if self.rpc_url else SvmTransport(self.svm)
        self.authority = self.client(100 * SOL, own_runs=True)

    def client(self, lamports: int = SOL, own_runs: bool = False) -> EranosClient:
        """A funded key; its runs are the world authority's unless `own_runs`."""
        authority = None if own_runs else self.authority.key
        c = EranosClient(self.transport, Keypair(), authority=authority)
        if lamports:
            c.airdrop(lamports)
        return c

    def permissioned(self, n_nodes: int = 0, params: RunParams | None = None) -> list[EranosClient]:
        self.authority.create_run(RUN_ID, Mode.PERMISSIONED, params or RunParams(10, 2))
        nodes = [self.client() for _ in range(n_nodes)]
        for node in nodes:
            self.authority.authorize(RUN_ID, node.key)
            node.join(RUN_ID)
        return nodes

    def permissionless(self, n_nodes: int = 0, unbonding: int = 100) -> list[EranosClient]:
        params = RunParams(10, 2, required_stake=STAKE, slash_amount=STAKE, unbonding_seconds=unbonding)
        self.authority.create_run(RUN_ID, Mode.PERMISSIONLESS, params)
        nodes = [self.client() for _ in range(n_nodes)]
        for node in nodes:
            node.join(RUN_ID)
        return nodes

    def send_raw(self, payer: Keypair, instructions: list[Instruction], signers: list[Keypair] = ()) -> str:
        message = Message(instructions, payer.pubkey())
        tx = Transaction([payer, *signers], message, self.transport.latest_blockhash())
        return self.transport.send(tx)


def with_accounts(ix: Instruction, replace: dict[int, AccountMeta]) -> Instruction:
    """The instruction with some account metas swapped: hostile variants."""
    return Instruction(ix.program_id, ix.data, [replace.get(i, m) for i, m in enumerate(ix.accounts)])


@contextmanager
def rejects(name: str):
    """pytest.raises for the eranos program error called `name`."""
    with pytest.raises(ProgramError) as info:
        yield info
    assert info.value.name == name, f"expected {name}, got {info.value.name}: {info.value.logs}"
