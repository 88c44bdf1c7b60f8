"""Overlapped rounds in the node: a round trains on the model one update behind, from the state
its previous, still unsettled, round left; replays run on the round's own model after the
validator has applied the round before; a rejected round takes the one trained after it along."""

import time
from dataclasses import replace

import pytest

from node import machine
from node.checkpoint import model_hash
from optim.state import is_fresh
from p2p.messages import FRESH_STATE, RoundEnd, RoundStart
from tests.runtime_node import start_node, stop

Z = bytes(32)
SECRET = b"\x5e" * 32


def node(tmp_path, seed, overlap=True):
    return start_node(tmp_path, seed, lambda c: replace(c, rounds=replace(c.rounds, overlap=overlap)))


@pytest.fixture
def pair(tmp_path):
    """Two members of an overlapped run, dialled to each other."""
    a, b = node(tmp_path, 1), node(tmp_path, 2)
    b.host.connect(a.host.addrs[0])
    yield a, b
    stop(a, b)


def start(number, members, model):
    batches = {k: [2 * number + i, 2 * number + i + 9] for i, k in enumerate(members)}
    return RoundStart(number, number, number, list(members), batches, time.time() + 60, model, Z, Z)


def train(n, rs):
    return n._train(machine.Train(rs)).commit


def test_the_next_round_trains_from_the_state_the_unsettled_round_left(pair):
    a, _ = pair
    first = train(a, start(0, [a.me], a.hash))
    second = train(a, start(1, [a.me], a.hash))
    assert first.state_before == FRESH_STATE and second.state_before == first.state_after


def test_a_round_whose_end_never_came_two_rounds_on_is_followed_by_a_fresh_state(pair):
    a, _ = pair
    train(a, start(0, [a.me], a.hash))
    train(a, start(1, [a.me], a.hash))
    assert train(a, start(2, [a.me], a.hash)).state_before == FRESH_STATE


def test_a_rejected_round_takes_the_round_trained_from_its_state_along(pair):
    a, _ = pair
    train(a, start(0, [a.me], a.hash))
    train(a, start(1, [a.me], a.hash))
    a.contributions.settle(0, accepted=False)
    assert is_fresh(a.optimizer) and a.contributions.pending == {}
    assert train(a, start(2, [a.me], a.hash)).state_before == FRESH_STATE


def test_a_replay_after_applying_the_round_before_runs_on_the_rounds_own_model(pair):
    a, b = pair
    members = sorted([a.me, b.me])
    h0 = a.hash
    rs0, rs1 = start(0, members, h0), start(1, members, h0)
    commits0 = {n.me: train(n, rs0) for n in (a, b)}
    commit1 = train(a, rs1)  # trained while round 0 is checked
    end0 = RoundEnd(0, members, [], [], Z, h0)
    for n in (a, b):
        assert n._apply(machine.Apply(rs0, end0, commits0)).model_hash is not None
    h1 = b.hash
    assert h1 == a.hash != h0
    verdict = b._validate(machine.Validate(rs1, a.me, commit1, SECRET)).verdict
    assert verdict.accept and verdict.score == 1.0
    assert bytes.fromhex(model_hash(b.model)) == h1  # its own weights again, to the bit


def test_synchronous_rounds_replay_only_on_the_model_they_hold(tmp_path):
    a, b = node(tmp_path, 3, overlap=False), node(tmp_path, 4, overlap=False)
    try:
        b.host.connect(a.host.addrs[0])
        members = sorted([a.me, b.me])
        rs0 = start(0, members, a.hash)
        commits0 = {n.me: train(n, rs0) for n in (a, b)}
        b._apply(machine.Apply(rs0, RoundEnd(0, members, [], [], Z, rs0.model_hash), commits0))
        assert b._validate(machine.Validate(rs0, a.me, commits0[a.me], SECRET)).verdict is None
    finally:
        stop(a, b)


def test_weights_not_kept_are_not_loaded(pair):
    a, _ = pair
    with a._versions.loaded(a.model, a.hash, b"\x01" * 32) as held:
        assert not held
