"""This node's own contributions until their rounds settle, and the optimizer state it serves.

The coordinator holds each member to a chain of optimizer states: a commit must start from the
state its last accepted payload left, or from a fresh one. So the node keeps, for each round it
committed and has not seen settled, the state that round started from. At the round's end the
state moves on if the payload was accepted and goes back if it was rejected; in overlapped rounds
the round trained meanwhile from the rejected state is dropped with it (the coordinator rejects
it as stale). A round whose end never came leaves the node not knowing which state it is held
to, so the next training starts afresh.

Every state is served by hash (node/committed_state.py) for as long as a validator may replay a
round from it; the blobs of contributions dropped on the way are handed back in `dropped`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from node import committed_state
from node.committed_state import HeldState
from optim import DemoOptimizer
from optim.local import LocalSteps


@dataclass
class Contribution:
    """This node's own part of a round, until the round is applied."""

    round: int
    step: int
    payload: bytes
    state_before: HeldState | None  # the state its compress started from; None: fresh
    served: list[bytes]  # blobs provided for the round


class Contributions:
    def __init__(
        self,
        host,
        optimizer: DemoOptimizer,
        local: LocalSteps | None,
        directory: Path,
        by_leaf: bool,
        overlap: bool,
    ) -> None:
        self.host, self.optimizer, self.local = host, optimizer, local
        self.directory, self.by_leaf = directory, by_leaf  # where and how its states are served
        committed_state.clear_orphans(directory)
        self.overlap = overlap
        self.pending: dict[int, Contribution] = {}  # by round
        self.held: HeldState | None = None  # the optimizer's state as served; None: fresh
        self.dropped: list[bytes] = []  # payload blobs of contributions dropped, still served
        self._before: HeldState | None = None  # the state the last compress started from

    def start(self, step: int) -> None:
        """Before training the round of `step`: drop what can no longer settle. In overlapped
        rounds the round of the step before is still being settled, and this one starts from
        the state it left; any other unsettled round means starting afresh."""
        behind = step - 1 if self.overlap else None
        if all(c.step == behind for c in self.pending.values()):
            return
        for own in self.pending.values():
            self._drop(own)
        self.pending = {}
        self.hold(None)

    def compressed(self) -> HeldState:
        """The optimizer just compressed: serve its new state (the one before is kept)."""
        self._before = self.held
        try:
            self.held = committed_state.serve(
                self.host.blobs, self.optimizer, self.local, self.directory, self.by_leaf
            )
        except OSError:  # not served, so never committed: back to the state that is
            committed_state.restore(self._before, self.optimizer, self.local)
            raise
        return self.held

    def withdraw(self) -> None:
        """Nothing is committed for the round just compressed: back to the state before it."""
        self.hold(self._before)

    def add(self, round: int, step: int, payload: bytes) -> Contribution:
        own = Contribution(round, step, payload, self._before, [self.host.provide(payload)])
        self.pending[round] = own
        return own

    def settle(self, round: int, accepted: bool) -> Contribution | None:
        """The round ended: keep its state if its payload was accepted, else restore the one
        before it, dropping the later rounds trained from the rejected state."""
        own = self.pending.pop(round, None)
        if own is None:
            return None
        if not accepted:
            for later in [n for n in self.pending if n > round]:
                self._drop(self.pending.pop(later))
            self.hold(own.state_before)
        elif own.state_before is not None and own.state_before.digest != self.held.digest:
            committed_state.forget(self.host.blobs, own.state_before)
        return own

    def hold(self, state: HeldState | None) -> None:
        """Make `state` (None: fresh) the optimizer's, serving it instead of the state held so far."""
        if self.held is not None and (state is None or state.digest != self.held.digest):
            committed_state.forget(self.host.blobs, self.held)
        committed_state.restore(state, self.optimizer, self.local)
        self.held = state

    def _drop(self, own: Contribution) -> None:
        self.dropped.extend(own.served)
        if own.state_before is not None:
            committed_state.forget(self.host.blobs, own.state_before)
