"""The shared round rules: batch shares, validator rings, tie-breakers, the commitment root."""

import hashlib
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.assignment import assign_batches
from protocol.checks import (
    audited,
    check_count,
    check_seed,
    choose_checks,
    choose_second,
    commitment,
    verify_reveal,
)
from protocol.commitments import commitment_root, inclusion_proof, verify_inclusion

MEMBERS = [bytes([i]) * 32 for i in range(1, 6)]


def test_weighted_shares_follow_throughput_by_largest_remainder():
    out = assign_batches(
        7, MEMBERS[:3], list(range(10)), weights={MEMBERS[0]: 3, MEMBERS[1]: 1, MEMBERS[2]: 1}
    )
    assert [len(out[m]) for m in MEMBERS[:3]] == [6, 2, 2]


def test_a_non_positive_weight_is_refused():
    with pytest.raises(ValueError, match="positive"):
        assign_batches(1, MEMBERS[:2], [1, 2], weights={MEMBERS[0]: 1, MEMBERS[1]: 0})


@given(
    seed=st.integers(0, 2**32),
    n_members=st.integers(1, 5),
    batch_ids=st.lists(st.integers(0, 10**6), unique=True, max_size=40),
    weights=st.lists(st.floats(0.01, 100), min_size=5, max_size=5),
)
def test_every_batch_goes_to_exactly_one_member(seed, n_members, batch_ids, weights):
    members = MEMBERS[:n_members]
    for w in (None, dict(zip(members, weights))):
        out = assign_batches(seed, members, batch_ids, w)
        assert sorted(b for ids in out.values() for b in ids) == sorted(batch_ids)
        assert out == assign_batches(seed, list(reversed(members)), batch_ids, w)


@given(seed=st.integers(0, 2**32), n=st.integers(0, 5), committed=st.integers(0, 5), rate=st.floats(0, 1))
def test_validators_never_check_themselves_and_have_one_committed_target_each(seed, n, committed, rate):
    members = MEMBERS[:n]
    v = choose_checks(seed, members, members[:committed], rate)
    assert all(validator != target for validator, target in v.items())
    assert len(set(v.values())) == len(v) and set(v.values()) <= set(members[:committed])
    assert set(v) <= set(members)


def test_half_the_committed_members_are_checked_at_rate_one_half():
    assert len(choose_checks(3, MEMBERS[:4], MEMBERS[:4], 0.5)) == 2
    assert len(choose_checks(3, MEMBERS[:5], MEMBERS[:2], 1.0)) == 2
    assert choose_checks(3, MEMBERS[:1], MEMBERS[:1], 1.0) == {}


def test_a_fractional_check_count_rounds_up_with_probability_its_fraction():
    counts = [check_count(seed, 2.25) for seed in range(4000)]
    assert set(counts) == {2, 3}
    assert 900 <= counts.count(3) <= 1100  # 1000 expected, sd 27


def test_each_target_is_checked_with_probability_the_rate_even_in_a_small_run():
    draws = (choose_checks(seed, MEMBERS[:4], MEMBERS[:4], 0.05) for seed in range(4000))
    checked = Counter(target for drawn in draws for target in drawn.values())
    assert set(checked) == set(MEMBERS[:4])
    assert all(140 <= n <= 260 for n in checked.values())  # 200 expected each, sd 14


def test_the_second_validator_is_neither_the_target_nor_anyone_who_replayed_it():
    for secret in (bytes([i]) * 32 for i in range(20)):
        assert choose_second(secret, MEMBERS[:3], MEMBERS[0], {MEMBERS[1]}) == MEMBERS[2]
    assert choose_second(bytes(32), MEMBERS[:2], MEMBERS[0], {MEMBERS[1]}) is None


def test_audits_are_drawn_at_the_rate_and_only_from_the_secret():
    draws = [audited(i.to_bytes(32, "little"), 0, MEMBERS[0], MEMBERS[1], 0.5) for i in range(400)]
    assert 150 < sum(draws) < 250  # deterministic; a uniform draw gives about 200
    assert all(audited(bytes([i]) * 32, 0, MEMBERS[0], MEMBERS[1], 1.0) for i in range(20))
    assert not any(audited(bytes([i]) * 32, 0, MEMBERS[0], MEMBERS[1], 0.0) for i in range(20))


def test_a_reveal_verifies_only_with_the_committed_secret_and_its_draw():
    secret, commits = b"s" * 32, {m: bytes([i]) * 32 for i, m in enumerate(MEMBERS[:4])}
    drawn = choose_checks(check_seed(secret, commits), MEMBERS[:4], list(commits), 0.5)
    assert verify_reveal(commitment(secret), secret, commits, MEMBERS[:4], 0.5, drawn)
    assert not verify_reveal(commitment(secret), b"t" * 32, commits, MEMBERS[:4], 0.5, drawn)
    forged = {MEMBERS[0]: MEMBERS[1]} if drawn != {MEMBERS[0]: MEMBERS[1]} else {MEMBERS[2]: MEMBERS[3]}
    assert not verify_reveal(commitment(secret), secret, commits, MEMBERS[:4], 0.5, forged)


def _h(*parts):
    return hashlib.sha256(b"".join(parts)).digest()


def test_commitment_root_of_three_leaves():
    k = [bytes([i]) * 32 for i in (3, 1, 2)]
    p = [bytes([0x40 + i]) * 32 for i in range(3)]
    leaves = [_h(b"\x00", k[1], p[1]), _h(b"\x00", k[2], p[2]), _h(b"\x00", k[0], p[0])]  # sorted by key
    expected = _h(b"\x01", _h(b"\x01", leaves[0], leaves[1]), leaves[2])
    assert commitment_root(dict(zip(k, p))) == expected


def test_commitment_root_of_nothing_and_of_one():
    assert commitment_root({}) == hashlib.sha256(b"").digest()
    assert commitment_root({b"k" * 32: b"p" * 32}) == _h(b"\x00", b"k" * 32, b"p" * 32)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32), min_size=1, max_size=40
    )
)
def test_every_accepted_commit_proves_its_inclusion_and_nothing_else_does(accepted):
    root = commitment_root(accepted)
    for key, payload in accepted.items():
        proof = inclusion_proof(accepted, key)
        assert verify_inclusion(root, key, payload, proof)
        assert not verify_inclusion(root, key, bytes(32) if payload != bytes(32) else b"\x01" * 32, proof)
