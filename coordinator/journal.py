"""The coordinator's journal: every step that changed the state, appended as one JSON line.

The state machine is a pure function of (state, event, now), so replaying the journal rebuilds
the state a crashed coordinator had, and regenerates the RecordRound effects of every finalized
round; the chain submitter then skips those the chain already holds, so no round is recorded or
credited twice. Ticks are journaled only when they changed something, which is what makes a
replay take the same transitions as the live run.

A torn last line (a crash mid-write) is dropped on replay; any other unreadable line is an error.
"""

from __future__ import annotations

import json
import os
import typing
from dataclasses import fields
from pathlib import Path
from typing import IO

from coordinator import machine
from coordinator.state import (
    Effect,
    Event,
    State,
)

EVENT_TYPES = {cls.__name__: cls for cls in typing.get_args(Event)}


class JournalError(Exception):
    """The journal cannot be replayed; the message names the line."""


def _encode(value: object) -> object:
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    return value


def _decode(value: object) -> object:
    if isinstance(value, dict) and set(value) == {"hex"}:
        return bytes.fromhex(value["hex"])
    if isinstance(value, list):
        return tuple(_decode(v) for v in value)
    return value


def encode_entry(event: Event | None, now: float) -> str:
    if event is None:
        return json.dumps({"t": now, "tick": True})
    body = {f.name: _encode(getattr(event, f.name)) for f in fields(event)}
    return json.dumps({"t": now, "type": type(event).__name__, "body": body})


def decode_entry(line: str) -> tuple[Event | None, float]:
    entry = json.loads(line)
    if entry.get("tick"):
        return None, float(entry["t"])
    cls = EVENT_TYPES[entry["type"]]
    return cls(**{k: _decode(v) for k, v in entry["body"].items()}), float(entry["t"])


class Journal:
    """Owns the state: `step` journals what changes it, `open` replays an existing journal."""

    def __init__(self, path: Path, state: State, file: IO[str]) -> None:
        self.path, self.state, self._file = path, state, file

    @classmethod
    def open(cls, path: Path, initial: State) -> tuple[Journal, list[Effect]]:
        """Replay `path` (if it exists) from the run's initial state; return the journal and the
        replayed effects (the shell re-submits their RecordRounds, nothing else)."""
        state, effects = initial, []
        if path.exists():
            lines = path.read_text().splitlines()
            for i, line in enumerate(lines):
                try:
                    event, now = decode_entry(line)
                except (ValueError, KeyError, TypeError) as exc:
                    if i == len(lines) - 1:
                        path.write_text("".join(line + "\n" for line in lines[:-1]))
                        break
                    raise JournalError(f"{path}:{i + 1}: unreadable entry ({exc})") from None
                result = machine.step(state, event, now)
                state = result.state
                effects.extend(result.effects)
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(path, state, path.open("a")), effects

    def step(self, event: Event | None, now: float) -> machine.Result:
        result = machine.step(self.state, event, now)
        if event is not None or result.state != self.state:
            self._file.write(encode_entry(event, now) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
        self.state = result.state
        return result

    def close(self) -> None:
        self._file.close()
