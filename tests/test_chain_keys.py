"""solana-keygen keypair files and the record_round bitmap encoding."""

import json
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st
from solders.keypair import Keypair

from chain.instructions import bitmap
from chain.keys import load_keypair, save_keypair


def test_a_keypair_round_trips_through_a_solana_keygen_file_readable_by_its_owner_only(tmp_path):
    kp = Keypair()
    save_keypair(kp, tmp_path / "id.json")
    assert load_keypair(tmp_path / "id.json") == kp
    assert len(json.loads((tmp_path / "id.json").read_text())) == 64
    assert stat.S_IMODE((tmp_path / "id.json").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "content, message",
    [
        ("not json", "not a readable"),
        ("[1, 2, 3]", "64 byte values"),
        (json.dumps([300] * 64), "64 byte values"),
        (json.dumps([1] * 64), "does not match"),
    ],
)
def test_a_malformed_keypair_file_is_refused_with_its_path(tmp_path, content, message):
    (tmp_path / "bad.json").write_text(content)
    with pytest.raises(ValueError, match=message):
        load_keypair(tmp_path / "bad.json")


def test_bitmap_sets_least_significant_bit_first():
    assert bitmap([0, 9], 10) == bytes([0b0000_0001, 0b0000_0010])
    assert bitmap([], 0) == b""


def test_bitmap_refuses_a_slot_past_the_member_count():
    with pytest.raises(ValueError, match="slot 10"):
        bitmap([10], 10)


@given(st.integers(0, 1024).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.integers(0, max(n - 1, 0))))))
def test_bitmap_round_trips(case):
    n, slots = case
    slots = {s for s in slots if s < n}
    bits = bitmap(slots, n)
    assert len(bits) == (n + 7) // 8
    assert {i for i in range(n) if bits[i // 8] >> (i % 8) & 1} == slots
