"""The run's on-chain member table as the coordinator sees it.

One read of the table (and the Run account, for the required stake) answers every Join that
arrived since the last one and checks the coordinator's own members, so a flood of Joins from
unknown keys costs at most one read per `min_interval_s`, off the coordinator's loop, whatever
its size. Joins waiting for a read are bounded; a key the table refuses stays refused until the
next read. After every finalized round the table is read again, and members that left, were
slashed or fell below the required stake leave the run at once.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor

from solders.pubkey import Pubkey

from chain.client import EranosClient
from chain.errors import ChainError
from chain.state import MemberStatus, Mode
from coordinator.state import Event, JoinRequest, LeaveRequest

log = logging.getLogger("eranos.coordinator.roster")
MAX_PENDING = 1024


class Roster:
    def __init__(
        self,
        client: EranosClient,
        run_id: int,
        executor: Executor,
        emit: Callable[[Event], None],
        members: Callable[[], set[bytes]],
        clock: Callable[[], float],
        min_interval_s: float = 2.0,
    ) -> None:
        self.client, self.run_id, self.executor, self.emit = client, run_id, executor, emit
        self.members, self.clock, self.min_interval_s = members, clock, min_interval_s
        self.refused: Counter[str] = Counter()  # reason -> joins refused
        self.points: dict[bytes, int] = {}  # member -> points earned on chain, as last read
        self._eligible: frozenset[bytes] = frozenset()
        self._read_at = float("-inf")
        self._pending: dict[bytes, JoinRequest] = {}
        self._reading = False
        self._lock = threading.Lock()

    def admit(self, join: JoinRequest) -> bool:
        """True when the table read last says `join`'s key may join; otherwise the join waits
        for the next read (which emits it if the key may) or is refused, counted."""
        if join.key in self._eligible:
            return True
        with self._lock:
            if len(self._pending) >= MAX_PENDING and join.key not in self._pending:
                self.refused["too many joins waiting"] += 1
                return False
            self._pending[join.key] = join
        if self.clock() - self._read_at >= self.min_interval_s:
            self.refresh()
        return False

    def refresh(self) -> None:
        """Read the table again soon (one read in flight at a time)."""
        with self._lock:
            if self._reading:
                return
            self._reading = True
        self.executor.submit(self._read)

    def _read(self) -> None:
        try:
            run = self.client.run(self.run_id)
            table = self.client.members_of(run)
        except (ChainError, LookupError) as exc:
            log.warning("cannot read the member table: %s", exc)
            with self._lock:
                self._reading = False
            return
        required = run.params.required_stake if run.mode == Mode.PERMISSIONLESS else 0
        eligible = frozenset(
            bytes(m.key) for m in table if m.status == MemberStatus.ACTIVE and m.stake >= required
        )
        self.points = {bytes(m.key): m.points_earned for m in table}
        with self._lock:
            self._eligible, self._read_at, self._reading = eligible, self.clock(), False
            pending, self._pending = self._pending, {}
        for key, join in pending.items():
            if key in eligible:
                self.emit(join)
            else:
                self.refused["not an active member on chain"] += 1
        for key in sorted(self.members() - eligible):
            log.info("%s is no longer an active member on chain: removed", Pubkey.from_bytes(key))
            self.emit(LeaveRequest(key))
