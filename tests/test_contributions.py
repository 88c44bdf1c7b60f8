"""A member's own contributions, settled against the coordinator's rule for the state a commit
may start from: under any order of accepts and rejects, in either round mode, an honest member's
commits are never judged to start from a state no accepted payload left (penalized)."""

import errno
import os
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator import rounds
from coordinator.state import State
from node import committed_state
from node.contributions import Contributions
from optim import DemoOptimizer
from optim.config import DemoConfig
from p2p.blobs import BlobStore
from p2p.messages import FRESH_STATE
from protocol.run_config import RoundsSection

KEY = b"\x01" * 32


class FakeHost:
    def __init__(self) -> None:
        self.blobs = BlobStore()

    def provide(self, data: bytes) -> bytes:
        return self.blobs.add_bytes(data)


def member(overlap: bool) -> tuple[Contributions, DemoOptimizer, torch.nn.Parameter]:
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(8, 8))
    optimizer = DemoOptimizer([("w", weight)], DemoConfig(chunk=4, topk=2, beta=0.9))
    states = Path(tempfile.mkdtemp(prefix="contributions-"))
    return Contributions(FakeHost(), optimizer, None, states, False, overlap), optimizer, weight


def train(own: Contributions, optimizer: DemoOptimizer, weight, number: int) -> tuple[bytes, bytes]:
    """The member trains round `number` (its step): (state before, state after) as committed."""
    own.start(number)
    weight.grad = torch.randn(weight.shape, generator=torch.Generator().manual_seed(number))
    optimizer.compress(round=number)
    after = own.compressed()
    contribution = own.add(number, number, b"payload %d" % number)
    return (contribution.state_before.digest if contribution.state_before else FRESH_STATE), after.digest


OUTCOMES = ("accepted", "rejected", "lost")  # lost: the commit never reached the coordinator


@settings(max_examples=80, deadline=None)
@given(st.lists(st.sampled_from(OUTCOMES), min_size=1, max_size=8), st.booleans())
def test_an_honest_members_commits_always_chain_whatever_the_coordinator_accepts(outcomes, overlap):
    own, optimizer, weight = member(overlap)
    s = State(replace(RoundsSection(), overlap=overlap))
    commits = {}

    def settle(done: int) -> State:
        before, after = commits[done]
        if outcomes[done] != "lost":  # judged as the coordinator judges a commit at its turn
            chained, stale = rounds.link(s, KEY, before)
            assert chained, f"round {done} would be penalized"
        accepted = outcomes[done] == "accepted" and not stale
        own.settle(done, accepted)
        stale_from = frozenset({KEY}) if overlap and not accepted else frozenset()
        return replace(s, states={**s.states, KEY: after} if accepted else s.states, stale_from=stale_from)

    for n in range(len(outcomes)):
        commits[n] = train(own, optimizer, weight, n)  # overlapped: before round n - 1 settles
        done = n - 1 if overlap else n
        if done >= 0:
            s = settle(done)


def test_state_files_a_gone_process_left_are_deleted_at_start_and_a_live_ones_kept(tmp_path):
    ended = subprocess.Popen(["true"])  # a process that has exited
    ended.wait()
    states = tmp_path / "state"
    states.mkdir()
    orphan = states / f"whole-{ended.pid}-0.state"
    live = states / f"whole-{os.getppid()}-0.state"
    orphan.write_bytes(b"x"), live.write_bytes(b"y")
    optimizer = DemoOptimizer([("w", torch.nn.Parameter(torch.zeros(4, 4)))], DemoConfig(chunk=4, topk=2))
    Contributions(FakeHost(), optimizer, None, states, False, overlap=False)
    assert not orphan.exists() and live.exists()


def test_a_state_that_cannot_be_served_puts_the_optimizer_back_on_the_state_it_served(monkeypatch):
    own, optimizer, weight = member(overlap=False)
    train(own, optimizer, weight, 0)
    served = [m.clone() for m in optimizer.momentum]

    def disk_full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(committed_state, "serve", disk_full)
    weight.grad = torch.ones(weight.shape)
    optimizer.compress(round=1)
    with pytest.raises(OSError):
        own.compressed()
    assert all(torch.equal(a, b) for a, b in zip(optimizer.momentum, served))
