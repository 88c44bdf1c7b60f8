"""Records finalized rounds on chain from a background thread, so chain latency never stalls the
next round. One `record_round` per round, in order. Failures that can clear (the endpoint is
away, a confirmation timed out, a stale blockhash) are retried; a refusal by the program is the
same every time (the run is paused, a member's state changed), so that round is given up,
reported in `status.failed` and the log, and later rounds are still recorded. A round the chain
already holds (a restarted coordinator replaying its journal) is skipped.

Keys become member-table slots here, from a fresh read of the table. A bit for a member the
program would refuse to credit (it left the table's active or unbonding states since the round,
for instance by revocation) is dropped and counted rather than failing the whole round.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from chain.client import EranosClient
from chain.errors import ChainError, ProgramError
from chain.state import MemberStatus, Mode
from coordinator.state import RecordRound

log = logging.getLogger("eranos.coordinator.chain")
PENALIZABLE = (MemberStatus.ACTIVE, MemberStatus.LEFT)  # stake still at risk while unbonding


@dataclass
class SubmitterStatus:
    recorded: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # already on chain
    dropped_bits: Counter = field(default_factory=Counter)  # reason -> count
    failed: dict[int, str] = field(default_factory=dict)  # round -> why the program refused it
    retries: int = 0
    last_error: str = ""  # the last failure
    error_at: float | None = None  # when it happened
    cleared_at: float | None = None  # when a round was recorded after it; None while it lasts

    def failed_now(self, error: str) -> None:
        self.last_error, self.error_at, self.cleared_at = error, time.time(), None

    def succeeded(self) -> None:
        if self.last_error and self.cleared_at is None:
            self.cleared_at = time.time()

    @property
    def last_recorded(self) -> int | None:
        return self.recorded[-1] if self.recorded else None


MAX_BATCH_COUNT = 255  # one byte per contributor on chain; more batches in a round are credited as this


def slots_for(
    record: RecordRound, members: list, status: SubmitterStatus, required_stake: int = 0
) -> tuple[dict[int, int], list[int], list[int]]:
    """Member-table slots for the record's key lists (contributors with their accepted batches),
    dropping, and counting, the bits the program would refuse: credit for a member that is not
    active with the required stake (it left or was slashed since the round), a penalty for one
    neither active nor unbonding. One member leaving mid-round must not cost everyone the round."""
    by_key = {bytes(m.key): m for m in members}

    def allowed(keys: tuple[bytes, ...], kind: str, ok) -> list[tuple[bytes, int]]:
        out = []
        for key in keys:
            m = by_key.get(key)
            if m is None or not ok(m):
                status.dropped_bits[f"{kind}: {'not on chain' if m is None else m.status.name.lower()}"] += 1
                continue
            out.append((key, m.slot))
        return out

    def creditable(m) -> bool:
        return m.status == MemberStatus.ACTIVE and m.stake >= required_stake

    contributed = {
        slot: min(record.batches[key], MAX_BATCH_COUNT)
        for key, slot in allowed(record.contributed, "contributed", creditable)
    }
    validated = [slot for _, slot in allowed(record.validated, "validated", creditable)]
    penalized = allowed(record.penalized, "penalized", lambda m: m.status in PENALIZABLE)
    return contributed, validated, [slot for _, slot in penalized]


class ChainSubmitter:
    def __init__(self, client: EranosClient, run_id: int, retry_s: float = 2.0) -> None:
        self.client, self.run_id, self.retry_s = client, run_id, retry_s
        self.status = SubmitterStatus()
        self._queue: queue.Queue[RecordRound | None] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chain-submitter", daemon=True)

    def start(self) -> ChainSubmitter:
        self._thread.start()
        return self

    def submit(self, record: RecordRound) -> None:
        self._queue.put(record)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def close(self, drain_timeout: float = 30.0) -> None:
        """Stop after what is queued is recorded (or the timeout passes)."""
        self._queue.put(None)
        self._thread.join(drain_timeout)
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while True:
            record = self._queue.get()
            if record is None:
                return
            while not self._stop.is_set():
                try:
                    self.record(record)
                    self.status.succeeded()
                    break
                except ProgramError as exc:  # the same answer every time: give the round up
                    self.status.failed[record.round] = str(exc)
                    self.status.failed_now(str(exc))
                    log.error("round %d will not be recorded: %s", record.round, exc)
                    break
                except ChainError as exc:
                    self.status.retries += 1
                    self.status.failed_now(str(exc))
                    log.warning(
                        "round %d not recorded yet (%s); retrying in %.0f s", record.round, exc, self.retry_s
                    )
                    self._stop.wait(self.retry_s)

    def record(self, record: RecordRound) -> None:
        """Record one round now (raises ChainError on failure; skips what the chain holds)."""
        run = self.client.run(self.run_id)
        if run.last_recorded_round is not None and record.round <= run.last_recorded_round:
            self.status.skipped.append(record.round)
            return
        members = self.client.members_of(run)
        required = run.params.required_stake if run.mode == Mode.PERMISSIONLESS else 0
        contributed, validated, penalized = slots_for(record, members, self.status, required)
        try:
            self.client.record_round(
                self.run_id, record.round, record.root, contributed, validated, penalized
            )
        except ProgramError as exc:
            if exc.name == "RoundNotIncreasing":
                self.status.skipped.append(record.round)
                return
            raise
        self.status.recorded.append(record.round)
        log.info(
            "recorded round %d on chain (%d contributed, %d penalized)",
            record.round,
            len(contributed),
            len(penalized),
        )
