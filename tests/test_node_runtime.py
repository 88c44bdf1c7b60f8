"""The node keeps a round's optimizer state only when its payload counted, and commits to it."""

import time
from pathlib import Path

import pytest
import torch

from node.runtime import NodeRuntime, RoundWork
from optim.state import is_fresh, state_bytes
from p2p.host import Host
from p2p.identity import Identity
from p2p.messages import FRESH_STATE, Commit, Recheck, Reveal, RoundEnd, RoundStart, RunInfo
from protocol.run_config import load

ROOT = Path(__file__).resolve().parent.parent
Z = bytes(32)
COORDINATOR = Identity.from_seed(b"\x0c" * 32).public_key


@pytest.fixture
def node(tmp_path):
    config = load(ROOT / "configs" / "sim.toml")
    host = Host(Identity.from_seed(b"\x05" * 32), config.run.name).start()
    runtime = NodeRuntime(config, host, COORDINATOR, tmp_path, torch.device("cpu"))
    published = []
    runtime._publish = published.append
    yield runtime, published
    runtime.close()
    host.close()


def round_work(runtime, number):
    me = runtime.me
    start = RoundStart(number, number, number, [me], {me: [number]}, time.time() + 60, runtime.hash, Z, Z)
    return RoundWork(start)


def train(runtime, published, number):
    work = round_work(runtime, number)
    runtime._train(work)
    return work, published[-1]


def test_a_first_commit_starts_from_the_fresh_state_and_names_the_state_after(node):
    runtime, published = node
    work, commit = train(runtime, published, 0)
    assert isinstance(commit, Commit) and commit.state_before == FRESH_STATE
    assert runtime.host.blobs.has(commit.state_after) and commit.state_after != FRESH_STATE


def test_an_accepted_round_keeps_its_state_and_the_next_commit_starts_from_it(node):
    runtime, published = node
    work, commit = train(runtime, published, 1)
    runtime._settle_state(work, RoundEnd(1, [runtime.me], [], [], Z))
    _, nxt = train(runtime, published, 2)
    assert nxt.state_before == commit.state_after


def test_a_rejected_round_restores_the_state_before_it(node):
    runtime, published = node
    first, _ = train(runtime, published, 2)
    runtime._settle_state(first, RoundEnd(2, [runtime.me], [], [], Z))
    before = state_bytes(runtime.optimizer)
    work, _ = train(runtime, published, 3)
    assert state_bytes(runtime.optimizer) != before
    runtime._settle_state(work, RoundEnd(3, [], [runtime.me], [], Z))
    assert state_bytes(runtime.optimizer) == before


def test_a_round_whose_end_never_came_is_followed_by_a_fresh_state(node):
    runtime, published = node
    first, _ = train(runtime, published, 3)
    runtime._settle_state(first, RoundEnd(3, [runtime.me], [], [], Z))
    train(runtime, published, 4)  # RoundEnd 4 never arrives
    _, commit = train(runtime, published, 5)
    assert commit.state_before == FRESH_STATE and not is_fresh(runtime.optimizer)


FORGER = Identity.from_seed(b"\x0d" * 32).public_key


def other_round_start(number):
    someone = bytes([9]) * 32  # a round this node is not in: nothing is trained
    return RoundStart(number, number, number, [someone], {someone: [0]}, time.time() + 60, Z, Z, Z)


@pytest.mark.parametrize(
    "message",
    [
        RoundStart(10**9, 0, 0, [], {}, 0.0, Z, Z, Z),
        RoundEnd(0, [], [], [], Z),
        Recheck(0, {Z: [Z]}),
        Reveal(0, Z, {}, {}),
        RunInfo("", 0, "waiting", -1, bytes(32), 0),
    ],
    ids=lambda m: type(m).__name__,
)
def test_a_control_message_not_signed_by_the_coordinator_is_ignored_and_counted(node, message):
    runtime, _ = node
    runtime.rounds[0] = round_work(runtime, 0)
    runtime.admitted = True
    runtime.on_message(FORGER, message)
    assert runtime.refused == {type(message).__name__: 1}
    assert list(runtime.rounds) == [0] and runtime.admitted and not runtime._pending


def test_a_forged_round_end_cannot_roll_back_the_optimizer_state(node):
    runtime, published = node
    work, _ = train(runtime, published, 1)
    runtime.rounds[1] = work
    held = runtime._held
    runtime.on_message(FORGER, RoundEnd(1, [], [runtime.me], [], Z))
    assert runtime._held == held and runtime._unresolved is work


def test_round_numbers_from_the_coordinator_only_move_forward(node):
    runtime, _ = node
    runtime.on_message(COORDINATOR, other_round_start(5))
    runtime.on_message(COORDINATOR, other_round_start(3))
    assert list(runtime.rounds) == [5]
