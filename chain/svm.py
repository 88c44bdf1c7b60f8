"""An in-process Solana runtime (LiteSVM) with the eranos program deployed at its fixed id.

The embedded localnet serves JSON-RPC over one of these, and tests that do not need JSON-RPC use
one directly. Blockhashes behave as on a cluster: each processed transaction moves to a new slot
and a new blockhash, and the last `BLOCKHASH_WINDOW` blockhashes stay valid, so concurrent
clients do not race each other; a repeated signature is refused as AlreadyProcessed. The clock
follows the host's wall clock unless a test pins it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from solders.account import Account
from solders.hash import Hash
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey
from solders.transaction import Transaction, VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata, SimulatedTransactionInfo

from chain.errors import error_json
from chain.instructions import PROGRAM_ID

MAX_HISTORY = 10_000
PROGRAM_PATH = Path(__file__).resolve().parent / "program" / "eranos.so"
BLOCKHASH_WINDOW = 150


@dataclass(frozen=True)
class Outcome:
    """What the runtime did with one transaction; `err` is in the JSON-RPC form, None on success."""

    signature: str
    slot: int
    err: object
    logs: list[str]
    units: int


def _outcome(signature: str, slot: int, result: object) -> Outcome:
    if isinstance(result, FailedTransactionMetadata):
        meta = result.meta()
        return Outcome(
            signature, slot, error_json(result.err()), list(meta.logs()), meta.compute_units_consumed()
        )
    meta = result.meta() if isinstance(result, SimulatedTransactionInfo) else result
    return Outcome(signature, slot, None, list(meta.logs()), meta.compute_units_consumed())


class ProgramSvm:
    def __init__(
        self,
        program_path: Path = PROGRAM_PATH,
        program_id: Pubkey = PROGRAM_ID,
        max_history: int = MAX_HISTORY,
    ) -> None:
        self.svm = LiteSVM().with_blockhash_check(False)
        self.max_history = max_history
        self.program_id = program_id
        self.svm.add_program(program_id, program_path.read_bytes())
        self.pinned_time: int | None = None
        self._blockhashes: OrderedDict[Hash, int] = OrderedDict()
        self._remember_blockhash()
        self.touched: set[Pubkey] = set()
        self.history: OrderedDict[str, Outcome] = OrderedDict()  # the last MAX_HISTORY outcomes

    @property
    def slot(self) -> int:
        return self.svm.get_clock().slot

    def latest_blockhash(self) -> Hash:
        return self.svm.latest_blockhash()

    def blockhash_valid(self, blockhash: Hash) -> bool:
        return blockhash in self._blockhashes

    def _remember_blockhash(self) -> None:
        self._blockhashes[self.svm.latest_blockhash()] = self.slot
        while len(self._blockhashes) > BLOCKHASH_WINDOW:
            self._blockhashes.popitem(last=False)

    def _tick(self) -> None:
        clock = self.svm.get_clock()
        clock.slot += 1
        self.svm.set_clock(clock)
        self.svm.expire_blockhash()
        self._remember_blockhash()

    def _set_clock_time(self) -> None:
        clock = self.svm.get_clock()
        clock.unix_timestamp = self.pinned_time if self.pinned_time is not None else int(time.time())
        self.svm.set_clock(clock)

    def set_time(self, unix_timestamp: int | None) -> None:
        """Pin the clock (tests of unbonding); later transactions see this time (None: wall clock)."""
        self.pinned_time = unix_timestamp

    def process(self, tx: Transaction | VersionedTransaction, simulate: bool = False) -> Outcome:
        signature = str(tx.signatures[0])
        if not self.blockhash_valid(tx.message.recent_blockhash):
            return Outcome(signature, self.slot, "BlockhashNotFound", [], 0)
        self._set_clock_time()
        if simulate:
            return _outcome(signature, self.slot, self.svm.simulate_transaction(tx))
        outcome = _outcome(signature, self.slot, self.svm.send_transaction(tx))
        if outcome.err != "AlreadyProcessed":
            self._remember(signature, outcome)
            self.touched.update(tx.message.account_keys)
            self._tick()
        return outcome

    def airdrop(self, pubkey: Pubkey, lamports: int) -> str:
        result = self.svm.airdrop(pubkey, lamports)
        if isinstance(result, FailedTransactionMetadata):
            raise RuntimeError(f"airdrop failed: {error_json(result.err())}")
        signature = str(result.signature())
        self._remember(signature, _outcome(signature, self.slot, result))
        self.touched.add(pubkey)
        self._tick()
        return signature

    def _remember(self, signature: str, outcome: Outcome) -> None:
        """Keep a bounded history (`max_history`): a real validator forgets statuses too."""
        self.history[signature] = outcome
        while len(self.history) > self.max_history:
            self.history.popitem(last=False)

    def account(self, pubkey: Pubkey) -> Account | None:
        return self.svm.get_account(pubkey)

    def set_account(self, pubkey: Pubkey, account: Account) -> None:
        self.svm.set_account(pubkey, account)
        self.touched.add(pubkey)

    def balance(self, pubkey: Pubkey) -> int:
        return self.svm.get_balance(pubkey) or 0

    def rent_exempt_minimum(self, size: int) -> int:
        return self.svm.minimum_balance_for_rent_exemption(size)
