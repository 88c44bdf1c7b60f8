"""The coordinator's journal: every step that changed the state, appended as one JSON line, and a
snapshot of the state every `snapshot_every` finalized rounds.

The state machine is a pure function of (state, event, now), so the last snapshot plus the
journal lines after it rebuild the state a crashed coordinator had, whatever the run's length:
each snapshot starts a new journal file. The snapshot also carries the RecordRound effects of the
last `KEEP_RECORDS` rounds, which the chain submitter re-submits and skips where the chain holds
them, so no round is recorded or credited twice. Ticks are journaled only when they changed
something, which is what makes a replay take the same transitions as the live run.

Every line and the snapshot carry a sequence number and a CRC-32 of their content, and decode
strictly by type (coordinator/persist.py). A torn last line (a crash mid-write) is dropped on
replay; any other unreadable line is a `JournalError`. Heartbeats and ticks are flushed but not
fsynced: a crash may lose the last of them, which leaves an older but consistent state.
"""

from __future__ import annotations

import json
import os
import typing
import zlib
from collections import deque
from pathlib import Path
from typing import IO

from coordinator import machine
from coordinator.persist import PersistError, decode, encode
from coordinator.state import Effect, Event, HeartbeatSeen, RecordRound, State

EVENT_TYPES = {cls.__name__: cls for cls in typing.get_args(Event)}
KEEP_RECORDS = 64  # rounds whose records a restart can still re-submit (a longer chain outage loses them)


class JournalError(Exception):
    """The journal cannot be replayed; the message names the line."""


def _sealed(entry: dict) -> str:
    body = json.dumps(entry, sort_keys=True)
    return json.dumps({**entry, "c": zlib.crc32(body.encode())}, sort_keys=True)


def _opened(line: str) -> dict:
    try:
        entry = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise PersistError(f"not JSON ({type(exc).__name__})") from None
    if not isinstance(entry, dict) or not isinstance(entry.get("c"), int):
        raise PersistError("not a journal entry")
    crc = entry.pop("c")
    if zlib.crc32(json.dumps(entry, sort_keys=True).encode()) != crc:
        raise PersistError("checksum mismatch")
    return entry


def encode_entry(n: int, event: Event | None, now: float) -> str:
    if event is None:
        return _sealed({"n": n, "t": now, "tick": True})
    return _sealed({"n": n, "t": now, "type": type(event).__name__, "body": encode(event)})


def decode_entry(line: str) -> tuple[int, Event | None, float]:
    """(sequence number, event or None for a tick, time); PersistError if anything is off."""
    entry = _opened(line)
    n, now = decode(entry.get("n"), int), decode(entry.get("t"), float)
    if set(entry) == {"n", "t", "tick"} and entry["tick"] is True:
        return n, None, now
    cls = EVENT_TYPES.get(entry.get("type"))
    if cls is None or set(entry) != {"n", "t", "type", "body"}:
        raise PersistError("unknown entry type")
    return n, decode(entry["body"], cls), now


class Journal:
    """Owns the state: `step` journals what changes it, `open` replays an existing journal."""

    def __init__(self, path: Path, state: State, n: int, records: deque, snapshot_every: int) -> None:
        self.path, self.state, self.n, self.records = path, state, n, records
        self.snapshot_every = snapshot_every
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = path.open("a")

    @property
    def snapshot_path(self) -> Path:
        return snapshot_path(self.path)

    @classmethod
    def open(cls, path: Path, initial: State, snapshot_every: int = 50) -> tuple[Journal, list[Effect]]:
        """Rebuild from `path`'s snapshot and journal (if any), starting from the run's initial
        state; return the journal and the replayed effects: the snapshot's RecordRounds, then every
        effect of the journal lines after it (the shell re-submits the RecordRounds)."""
        state, n, records = initial, 0, deque(maxlen=KEEP_RECORDS)
        snap = snapshot_path(path)
        if snap.exists():
            try:
                saved = _opened(snap.read_text())
                state, n = decode(saved.get("state"), State), decode(saved.get("n"), int)
                records.extend(decode(saved.get("records"), list[RecordRound]))
            except PersistError as exc:
                raise JournalError(f"{snap}: unreadable snapshot ({exc})") from None
        kept = list(records)
        effects: list[Effect] = []
        if path.exists():
            state, n, effects = _replay(path, state, n)
        records.extend(e for e in effects if isinstance(e, RecordRound))
        return cls(path, state, n, records, snapshot_every), kept + effects

    def step(self, event: Event | None, now: float) -> machine.Result:
        result = machine.step(self.state, event, now)
        if event is not None or result.state != self.state:
            self.n += 1
            self._file.write(encode_entry(self.n, event, now) + "\n")
            self._file.flush()
            if event is not None and not isinstance(event, HeartbeatSeen):
                os.fsync(self._file.fileno())
        finalized = result.state.finalized_rounds > self.state.finalized_rounds
        self.state = result.state
        self.records.extend(e for e in result.effects if isinstance(e, RecordRound))
        if finalized and self.state.finalized_rounds % self.snapshot_every == 0:
            self.snapshot()
        return result

    def snapshot(self) -> None:
        """Write the state and recent records, then start an empty journal: the snapshot names
        the last line it covers, so a crash between the two steps replays nothing twice."""
        tmp = self.snapshot_path.with_suffix(".tmp")
        saved = {"n": self.n, "state": encode(self.state), "records": encode(list(self.records))}
        tmp.write_text(_sealed(saved))
        with tmp.open() as f:
            os.fsync(f.fileno())
        tmp.replace(self.snapshot_path)
        self._file.close()
        self._file = self.path.open("w")

    def close(self) -> None:
        self._file.close()


def snapshot_path(path: Path) -> Path:
    return path.with_name(path.name + ".snapshot")


def _replay(path: Path, state: State, after: int) -> tuple[State, int, list[Effect]]:
    lines, effects, n = path.read_text().splitlines(), [], after
    for i, line in enumerate(lines):
        try:
            seq, event, now = decode_entry(line)
        except PersistError as exc:
            if i == len(lines) - 1:  # torn by a crash mid-write
                path.write_text("".join(line + "\n" for line in lines[:-1]))
                break
            raise JournalError(f"{path}:{i + 1}: unreadable entry ({exc})") from None
        if seq <= after:
            continue  # covered by the snapshot
        result = machine.step(state, event, now)
        state, n = result.state, seq
        effects.extend(result.effects)
    return state, n, effects
