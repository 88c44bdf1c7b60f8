"""The event log every process writes: one JSON object per line, one schema for all of them, so
`eranos timeline` can lay a whole run's processes side by side.

    {"t": 1764474000.12, "process": "coordinator", "name": "training", "round": 3, "dur": 1.42}

`t` is the start (unix seconds), `dur` the span's length (0 for a point in time), `name` what
happened (a coordinator phase, a node job: train, validate, apply, sync), `round` the round it
belongs to (-1 for none). A line that does not parse is skipped by readers, never fatal.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Event:
    t: float
    process: str
    name: str
    round: int = -1
    dur: float = 0.0


class EventLog:
    """Appends events to `path` (thread-safe); `path` None: a log that writes nothing."""

    def __init__(self, path: Path | None, process: str, clock=time.time) -> None:
        self.process, self.clock = process, clock
        self._lock = threading.Lock()
        self._file = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", buffering=1)

    def write(self, name: str, round: int = -1, start: float | None = None, dur: float = 0.0) -> None:
        if self._file is None:
            return
        event = Event(
            round=round, t=self.clock() if start is None else start, process=self.process, name=name, dur=dur
        )
        with self._lock:
            self._file.write(json.dumps(asdict(event)) + "\n")

    @contextmanager
    def span(self, name: str, round: int = -1) -> Iterator[None]:
        start = self.clock()
        try:
            yield
        finally:
            self.write(name, round, start, self.clock() - start)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def read_events(path: Path) -> list[Event]:
    """The well-formed events of one file, in file order."""
    events = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            raw = json.loads(line)
            event = Event(
                t=float(raw["t"]), process=str(raw["process"]), name=str(raw["name"]),
                round=int(raw.get("round", -1)), dur=float(raw.get("dur", 0.0)),
            )  # fmt: skip
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
        events.append(event)
    return events
