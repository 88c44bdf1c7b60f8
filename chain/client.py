"""The typed client of the eranos program: runs, membership, rounds, claims and stake.

`EranosClient` builds instructions with `chain.instructions` (anchorpy's Program over the IDL) and
sends them through a transport: `RpcTransport` speaks Solana JSON-RPC, so the same client works
against the embedded localnet, `solana-test-validator` or a cluster; `SvmTransport` drives an
in-process `ProgramSvm` for fast tests. Failures arrive as the typed errors of `chain.errors`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import httpx
from solana.exceptions import SolanaRpcException
from solana.rpc.api import Client
from solana.rpc.commitment import Confirmed
from solana.rpc.core import RPCException
from solana.rpc.types import TxOpts
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.rpc.errors import SendTransactionPreflightFailureMessage
from solders.transaction import Transaction

from chain import instructions as ixs
from chain.errors import (
    ConfirmationTimeout,
    RpcError,
    RpcUnavailable,
    error_json,
    from_transaction_error,
)
from chain.state import Member, Mode, RunParams, RunState
from chain.svm import ProgramSvm

CONFIRM_TIMEOUT_S = 30.0


class Transport(Protocol):
    def latest_blockhash(self) -> Hash: ...
    def send(self, tx: Transaction) -> str: ...
    def simulate_units(self, tx: Transaction) -> int: ...
    def account_data(self, pubkey: Pubkey) -> bytes | None: ...
    def balance(self, pubkey: Pubkey) -> int: ...
    def rent_exempt_minimum(self, size: int) -> int: ...
    def token_balance(self, token_account: Pubkey) -> int: ...
    def airdrop(self, pubkey: Pubkey, lamports: int) -> None: ...


class SvmTransport:
    """Straight into an in-process ProgramSvm: no JSON-RPC, for tests and benchmarks."""

    def __init__(self, svm: ProgramSvm) -> None:
        self.svm = svm

    def latest_blockhash(self) -> Hash:
        return self.svm.latest_blockhash()

    def send(self, tx: Transaction) -> str:
        outcome = self.svm.process(tx)
        if outcome.err is not None:
            raise from_transaction_error(outcome.err, outcome.logs)
        return outcome.signature

    def simulate_units(self, tx: Transaction) -> int:
        outcome = self.svm.process(tx, simulate=True)
        if outcome.err is not None:
            raise from_transaction_error(outcome.err, outcome.logs)
        return outcome.units

    def account_data(self, pubkey: Pubkey) -> bytes | None:
        account = self.svm.account(pubkey)
        return bytes(account.data) if account is not None and account.lamports else None

    def balance(self, pubkey: Pubkey) -> int:
        return self.svm.balance(pubkey)

    def rent_exempt_minimum(self, size: int) -> int:
        return self.svm.rent_exempt_minimum(size)

    def token_balance(self, token_account: Pubkey) -> int:
        data = self.account_data(token_account)
        return int.from_bytes(data[64:72], "little") if data else 0

    def airdrop(self, pubkey: Pubkey, lamports: int) -> None:
        self.svm.airdrop(pubkey, lamports)


class RpcTransport:
    """Solana JSON-RPC through solana-py; every HTTP failure becomes RpcUnavailable."""

    def __init__(
        self, url: str, timeout_s: float = 10.0, confirm_timeout_s: float = CONFIRM_TIMEOUT_S
    ) -> None:
        self.url = url
        self.client = Client(url, commitment=Confirmed, timeout=timeout_s)
        self.confirm_timeout_s = confirm_timeout_s

    def _call(self, method: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (SolanaRpcException, httpx.HTTPError, OSError) as exc:
            raise RpcUnavailable(self.url, exc.__cause__ or exc) from None
        except RPCException as exc:
            raise _rpc_failure(method, exc) from None

    def latest_blockhash(self) -> Hash:
        return self._call("getLatestBlockhash", self.client.get_latest_blockhash).value.blockhash

    def _await_status(self, signature):
        """Poll the signature until the cluster reports it confirmed; its status."""
        deadline = time.monotonic() + self.confirm_timeout_s
        while time.monotonic() < deadline:
            status = self._call(
                "getSignatureStatuses", self.client.get_signature_statuses, [signature]
            ).value[0]
            if status is not None and status.confirmation_status is not None:
                return status
            time.sleep(0.05)
        raise ConfirmationTimeout(str(signature), self.confirm_timeout_s)

    def send(self, tx: Transaction) -> str:
        opts = TxOpts(skip_confirmation=True, preflight_commitment=Confirmed)
        signature = self._call("sendTransaction", self.client.send_transaction, tx, opts).value
        status = self._await_status(signature)
        if status.err is not None:
            raise from_transaction_error(error_json(status.err), [])
        return str(signature)

    def simulate_units(self, tx: Transaction) -> int:
        value = self._call("simulateTransaction", self.client.simulate_transaction, tx).value
        if value.err is not None:
            raise from_transaction_error(error_json(value.err), list(value.logs or []))
        return value.units_consumed or 0

    def account_data(self, pubkey: Pubkey) -> bytes | None:
        value = self._call("getAccountInfo", self.client.get_account_info, pubkey).value
        return bytes(value.data) if value is not None else None

    def balance(self, pubkey: Pubkey) -> int:
        return self._call("getBalance", self.client.get_balance, pubkey).value

    def rent_exempt_minimum(self, size: int) -> int:
        return self._call(
            "getMinimumBalanceForRentExemption", self.client.get_minimum_balance_for_rent_exemption, size
        ).value

    def token_balance(self, token_account: Pubkey) -> int:
        if self.account_data(token_account) is None:
            return 0
        return int(
            self._call(
                "getTokenAccountBalance", self.client.get_token_account_balance, token_account
            ).value.amount
        )

    def airdrop(self, pubkey: Pubkey, lamports: int) -> None:
        signature = self._call("requestAirdrop", self.client.request_airdrop, pubkey, lamports).value
        self._await_status(signature)


def _rpc_failure(method: str, exc: RPCException) -> Exception:
    detail = exc.args[0] if exc.args else exc
    if isinstance(detail, SendTransactionPreflightFailureMessage):
        return from_transaction_error(error_json(detail.data.err), list(detail.data.logs or []))
    code = getattr(detail, "code", -1)
    message = getattr(detail, "message", str(detail))
    return RpcError(method, code, message)


FEE_MARGIN_LAMPORTS = 10_000_000  # 0.01 SOL: a transaction's fees with room to spare
MINT_DECIMALS_OFFSET = 44  # in an SPL Mint account: after the authority option (36) and supply (8)


class EranosClient:
    """One participant's view of the program: `keypair` signs and pays for what it sends; the
    runs it addresses are `authority`'s (a run id is per authority: the coordinator's key for a
    node, its own for a coordinator)."""

    def __init__(
        self,
        transport: Transport,
        keypair: Keypair,
        program_id: Pubkey = ixs.PROGRAM_ID,
        authority: Pubkey | None = None,
    ) -> None:
        self.transport = transport
        self.keypair = keypair
        self.program_id = program_id
        self.authority = keypair.pubkey() if authority is None else authority

    @classmethod
    def connect(
        cls, url: str, keypair: Keypair, program_id: Pubkey = ixs.PROGRAM_ID, authority: Pubkey | None = None
    ) -> EranosClient:
        return cls(RpcTransport(url), keypair, program_id, authority)

    @property
    def key(self) -> Pubkey:
        return self.keypair.pubkey()

    def transaction(
        self, instructions: Sequence[Instruction], signers: Iterable[Keypair] = ()
    ) -> Transaction:
        message = Message(list(instructions), self.key)
        return Transaction([self.keypair, *signers], message, self.transport.latest_blockhash())

    def send(self, instructions: Sequence[Instruction], signers: Iterable[Keypair] = ()) -> str:
        return self.transport.send(self.transaction(instructions, signers))

    # --- the run (authority) ---

    def create_run(self, run_id: int, mode: Mode, params: RunParams, decimals: int = 0) -> RunState:
        """Allocate the member table, create the reward mint (authority: the Run PDA), initialize."""
        table, mint = Keypair(), Keypair()
        run_key, _ = ixs.run_address(run_id, self.key, self.program_id)
        table_rent = self.transport.rent_exempt_minimum(ixs.MEMBER_TABLE_SIZE)
        mint_rent = self.transport.rent_exempt_minimum(ixs.spec.MINT_SIZE)
        self.send(
            [
                ixs.create_member_table(self.key, table.pubkey(), table_rent, self.program_id),
                *ixs.create_mint(self.key, mint.pubkey(), mint_rent, run_key, decimals),
                ixs.initialize_run(
                    self.key, run_id, table.pubkey(), mint.pubkey(), mode, params, self.program_id
                ),
            ],
            [table, mint],
        )
        return self.run(run_id)

    def creation_cost(self) -> int:
        """Lamports create_run takes from the authority: rent for the member table, the mint and
        the Run account, plus a margin for fees."""
        sizes = (ixs.MEMBER_TABLE_SIZE, ixs.spec.MINT_SIZE, ixs.RUN_SIZE)
        return sum(self.transport.rent_exempt_minimum(size) for size in sizes) + FEE_MARGIN_LAMPORTS

    def update_run(
        self, run_id: int, params: RunParams | None = None, paused: bool | None = None
    ) -> RunState:
        run = self.run(run_id)
        params = run.params if params is None else params
        paused = run.paused if paused is None else paused
        self.send([ixs.update_run(self.key, run.address, params, paused, self.program_id)])
        return self.run(run_id)

    def authorize(self, run_id: int, node: Pubkey) -> None:
        self.send([ixs.authorize_node(self.key, self.run(run_id), node, self.program_id)])

    def revoke(self, run_id: int, node: Pubkey) -> None:
        self.send([ixs.revoke_node(self.key, self.run(run_id), node, self.program_id)])

    def record_round_instruction(
        self,
        run: RunState,
        round_: int,
        root: bytes,
        contributed: Mapping[int, int] | Iterable[int],
        validated: Iterable[int],
        penalized: Iterable[int],
    ) -> Instruction:
        n = run.member_count
        batches = contributed if isinstance(contributed, Mapping) else dict.fromkeys(contributed, 1)
        return ixs.record_round(
            self.key,
            run,
            round_,
            root,
            ixs.bitmap(batches, n),
            ixs.bitmap(validated, n),
            ixs.bitmap(penalized, n),
            bytes(batches[slot] for slot in sorted(batches)),
            self.program_id,
        )

    def record_round(
        self,
        run_id: int,
        round_: int,
        root: bytes,
        contributed: Mapping[int, int] | Iterable[int] = (),
        validated: Iterable[int] = (),
        penalized: Iterable[int] = (),
    ) -> str:
        """Record one round; the sets name member-table slots (see `members`). `contributed`
        maps each contributor's slot to its accepted batches (an iterable of slots: one each)."""
        ix = self.record_round_instruction(self.run(run_id), round_, root, contributed, validated, penalized)
        return self.send([ix])

    # --- a member ---

    def join(self, run_id: int) -> Member:
        self.send([ixs.join(self.key, self.run(run_id), self.program_id)])
        return self._own_member(run_id)

    def leave(self, run_id: int) -> Member:
        self.send([ixs.leave(self.key, self.run(run_id), self.program_id)])
        return self._own_member(run_id)

    def withdraw_stake(self, run_id: int) -> int:
        """Return what is left of the stake once unbonded; the amount withdrawn."""
        amount = self._own_member(run_id).stake
        self.send([ixs.withdraw_stake(self.key, self.run(run_id), self.program_id)])
        return amount

    def claim(self, run_id: int, amount: int | None = None) -> int:
        """Mint `amount` (default: all unclaimed) points as tokens to the own token account."""
        run = self.run(run_id)
        amount = self._own_member(run_id).unclaimed if amount is None else amount
        self.send(ixs.claim(self.key, run, amount, self.program_id))
        return amount

    # --- reads ---

    def run(self, run_id: int) -> RunState:
        address, _ = ixs.run_address(run_id, self.authority, self.program_id)
        data = self.transport.account_data(address)
        if data is None:
            raise LookupError(f"run {run_id} does not exist (no account at {address})")
        return ixs.decode_run(address, data, self.program_id)

    def members(self, run_id: int) -> list[Member]:
        return self.members_of(self.run(run_id))

    def members_of(self, run: RunState) -> list[Member]:
        """The member table of a run already read (one account read, not two)."""
        data = self.transport.account_data(run.members)
        return ixs.decode_members(data, run.member_count, self.program_id) if data else []

    def member(self, run_id: int, key: Pubkey) -> Member | None:
        return next((m for m in self.members(run_id) if m.key == key), None)

    def _own_member(self, run_id: int) -> Member:
        member = self.member(run_id, self.key)
        if member is None:
            raise LookupError(f"{self.key} is not a member of run {run_id}")
        return member

    def token_balance(self, run_id: int, owner: Pubkey | None = None) -> int:
        run = self.run(run_id)
        return self.transport.token_balance(ixs.token_account(owner or self.key, run.mint))

    def token_decimals(self, run: RunState) -> int:
        data = self.transport.account_data(run.mint)
        return data[MINT_DECIMALS_OFFSET] if data and len(data) > MINT_DECIMALS_OFFSET else 0

    def balance(self, key: Pubkey | None = None) -> int:
        return self.transport.balance(key or self.key)

    def airdrop(self, lamports: int, key: Pubkey | None = None) -> None:
        self.transport.airdrop(key or self.key, lamports)
