"""A validator's verdict on another member's commit, end to end between two nodes on 127.0.0.1:
it fetches the payload and a sample of the member's state (or, with local steps, all of it, to a
file) by hash and replays with the micro batch the commit names, which the run must allow."""

import time
from dataclasses import replace

import pytest

from node import machine
from optim.state import state_bytes
from p2p.messages import RoundStart
from tests.runtime_node import start_node, stop

Z = bytes(32)
SECRET = b"\x5e" * 32


def node(tmp_path, seed, micro_batch):
    return start_node(tmp_path, seed, lambda c: replace(c, data=replace(c.data, micro_batch=micro_batch)))


@pytest.fixture
def pair(tmp_path):
    """(member, validator) of an auto micro-batch run, the validator dialled to the member."""
    member, validator = node(tmp_path, 1, 0), node(tmp_path, 2, 0)
    validator.host.connect(member.host.addrs[0])
    yield member, validator
    stop(member, validator)


def two_rounds(member, micro_batch):
    """The member's second round (its state no longer fresh), trained with this micro batch."""
    member.trainer.micro_batch = micro_batch
    me = member.me
    for number in (0, 1):
        start = RoundStart(number, number, number, [me], {me: [number, number + 7]}, time.time() + 60,
                           member.hash, Z, Z)  # fmt: skip
        commit = member._train(machine.Train(start)).commit
        if number == 0:
            member.contributions.settle(0, accepted=True)
    return start, commit


def judge(validator, start, member, commit):
    return validator.checker.judge(start, member.me, commit, SECRET)


def test_a_validator_accepts_an_honest_commit_from_a_sample_of_its_state(pair):
    member, validator = pair
    start, commit = two_rounds(member, 4)
    assert validator.checker.by_leaf and commit.micro_batch == 4
    verdict = judge(validator, start, member, commit)
    assert verdict.accept and verdict.available and verdict.score == 1.0


def test_a_commit_summed_over_other_micro_batches_is_replayed_with_them(pair):
    member, validator = pair
    start, commit = two_rounds(member, 2)
    assert validator.trainer.micro_batch == 4 and commit.micro_batch == 2
    assert judge(validator, start, member, commit).accept
    assert validator.trainer.micro_batch == 4  # its own again


def test_a_commit_naming_a_micro_batch_other_than_the_one_it_used_is_rejected(pair):
    member, validator = pair
    start, commit = two_rounds(member, 2)
    assert not judge(validator, start, member, replace(commit, micro_batch=1)).accept


@pytest.mark.parametrize("claimed", [0, 5, 10**9])
def test_a_micro_batch_the_run_does_not_allow_is_rejected(pair, claimed):
    member, validator = pair
    start, commit = two_rounds(member, 4)
    verdict = judge(validator, start, member, replace(commit, micro_batch=claimed))
    assert not verdict.accept and verdict.available


def test_a_run_that_pins_its_micro_batch_rejects_a_commit_summed_over_another(tmp_path):
    member, validator = node(tmp_path, 3, 2), node(tmp_path, 4, 4)
    try:
        validator.host.connect(member.host.addrs[0])
        start, commit = two_rounds(member, 2)
        assert not judge(validator, start, member, commit).accept
    finally:
        stop(member, validator)


@pytest.fixture
def local_pair(tmp_path):
    """(member, validator) of a run with two local steps a round: whole states, not samples."""

    def local(c):
        return replace(c, optim=replace(c.optim, inner_steps=2))

    member, validator = start_node(tmp_path, 5, local), start_node(tmp_path, 6, local)
    validator.host.connect(member.host.addrs[0])
    yield member, validator
    stop(member, validator)


def test_a_member_serves_its_whole_state_from_a_file_one_tensor_at_a_time(local_pair):
    member, _ = local_pair
    two_rounds(member, 4)
    held = member.contributions.held
    assert not held.spans and held.path.read_bytes() == state_bytes(member.optimizer, member.local)
    assert member.host.blobs.read_all(held.digest) == held.path.read_bytes()


def test_a_validator_fetches_a_whole_state_to_a_file_and_accepts_an_honest_commit(local_pair):
    member, validator = local_pair
    start, commit = two_rounds(member, 4)
    assert not validator.checker.by_leaf
    verdict = judge(validator, start, member, commit)
    assert verdict.accept and verdict.score == 1.0
    assert list(validator.checker.directory.iterdir()) == []  # the fetched states are gone


def test_a_whole_state_commit_naming_another_next_state_is_rejected(local_pair):
    member, validator = local_pair
    start, commit = two_rounds(member, 4)
    assert not judge(validator, start, member, replace(commit, state_after=commit.state_before)).accept
    assert list(validator.checker.directory.iterdir()) == []


def test_a_whole_state_that_is_not_a_state_is_rejected_without_a_crash(local_pair):
    member, validator = local_pair
    start, commit = two_rounds(member, 4)
    junk = member.host.provide(b"EROS" + bytes(100))
    verdict = judge(validator, start, member, replace(commit, state_before=junk))
    assert not verdict.accept and verdict.available
