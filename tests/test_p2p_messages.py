import json

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2p.errors import (
    BadSignature,
    IdentityError,
    InvalidBody,
    MalformedMessage,
    MessageError,
    OversizedMessage,
    UnknownType,
    WrongRun,
)
from p2p.identity import Identity, key_of_peer_id, load_keypair, peer_id_of, save_keypair, verify
from p2p.messages import MAX_MESSAGE_BYTES, Commit, Heartbeat, Inbox, RoundEnd, RoundStart, open_message, seal

ALICE = Identity.from_seed(bytes(range(32)))
BOB = Identity.from_seed(bytes(range(1, 33)))
H = bytes(32)


def commit(round_=3):
    return Commit(
        round=round_, payload_hash=H, size=1234, model_hash=H, loss=2.5, state_before=H, state_after=H
    )


def test_keypair_file_round_trips_in_solana_keygen_format(tmp_path):
    save_keypair(ALICE, tmp_path / "id.json")
    raw = json.loads((tmp_path / "id.json").read_text())
    assert len(raw) == 64 and bytes(raw[32:]) == ALICE.public_key
    assert load_keypair(tmp_path / "id.json") == ALICE


def test_keypair_whose_public_half_does_not_match_is_refused(tmp_path):
    (tmp_path / "id.json").write_text(json.dumps(list(ALICE.seed + BOB.public_key)))
    with pytest.raises(IdentityError):
        load_keypair(tmp_path / "id.json")


def test_signatures_verify_only_for_the_signer():
    sig = ALICE.sign(b"hello")
    assert verify(ALICE.public_key, b"hello", sig)
    assert not verify(BOB.public_key, b"hello", sig)
    assert not verify(ALICE.public_key, b"hellO", sig)


def test_sealed_message_opens_to_the_same_message():
    start = RoundStart(
        round=1,
        step=1,
        seed=7,
        members=[ALICE.public_key, BOB.public_key],
        batches={ALICE.public_key: [0, 2], BOB.public_key: [1]},
        deadline=1.5e9,
        model_hash=H,
        check_commitment=H,
        audit_commitment=H,
    )
    envelope = open_message(seal(ALICE, "run-1", 9, start), "run-1")
    assert (envelope.sender, envelope.seq, envelope.body) == (ALICE.public_key, 9, start)


def test_message_for_another_run_is_rejected():
    with pytest.raises(WrongRun):
        open_message(seal(ALICE, "run-1", 0, commit()), "run-2")


def test_message_with_another_senders_key_is_a_bad_signature():
    wire = msgpack.unpackb(seal(ALICE, "r", 0, commit()))
    wire["from"] = BOB.public_key
    with pytest.raises(BadSignature):
        open_message(msgpack.packb(wire), "r")


def test_altered_body_is_a_bad_signature():
    wire = msgpack.unpackb(seal(ALICE, "r", 0, commit()))
    wire["body"]["size"] = 1
    with pytest.raises(BadSignature):
        open_message(msgpack.packb(wire), "r")


def signed_raw(type_name, body, seq=0):
    from p2p.messages import _signed_bytes

    sig = ALICE.sign(_signed_bytes("r", type_name, ALICE.public_key, seq, body))
    return msgpack.packb(
        {
            "v": 1,
            "run": "r",
            "type": type_name,
            "from": ALICE.public_key,
            "seq": seq,
            "body": body,
            "sig": sig,
        }
    )


def test_unknown_type_is_rejected_even_when_signed():
    with pytest.raises(UnknownType):
        open_message(signed_raw("Transfer", {"amount": 1}), "r")


@pytest.mark.parametrize(
    "body",
    [
        {"round": 1, "model_hash": b"short"},
        {"round": True, "model_hash": H},
        {"round": 1},
        {"round": 1, "model_hash": H, "extra": 1},
    ],
)
def test_signed_body_with_wrong_fields_or_types_is_invalid(body):
    with pytest.raises(InvalidBody):
        open_message(signed_raw("Heartbeat", body), "r")


def test_non_finite_float_is_invalid():
    body = {"round": 1, "payload_hash": H, "size": 1, "model_hash": H, "loss": float("nan")}
    with pytest.raises(InvalidBody):
        open_message(signed_raw("Commit", body), "r")


def test_oversized_message_is_rejected_before_decoding():
    with pytest.raises(OversizedMessage):
        open_message(b"\x00" * (MAX_MESSAGE_BYTES + 1), "r")


def test_sender_refuses_to_seal_an_invalid_body():
    with pytest.raises(InvalidBody):
        seal(ALICE, "r", 0, Heartbeat(round=1, model_hash=b"x"))


def test_inbox_drops_duplicates_and_counts_them():
    inbox = Inbox("r")
    data = seal(ALICE, "r", 5, commit())
    assert inbox.receive(data) is not None
    assert inbox.receive(data) is None
    assert inbox.rejected == {"replayed": 1} and inbox.accepted == 1


def test_inbox_accepts_out_of_order_sequence_numbers_within_the_window():
    inbox = Inbox("r", window=10)
    for seq in (5, 3, 9, 4):
        assert inbox.receive(seal(ALICE, "r", seq, commit())) is not None
    assert inbox.receive(seal(ALICE, "r", 30, commit())) is not None
    assert inbox.receive(seal(ALICE, "r", 20, commit())) is None  # older than the window
    assert inbox.rejected == {"replayed": 1}


def test_inbox_tracks_senders_independently():
    inbox = Inbox("r")
    assert inbox.receive(seal(ALICE, "r", 1, commit())) and inbox.receive(seal(BOB, "r", 1, commit()))


def test_inbox_counts_each_rejection_reason():
    inbox = Inbox("r")
    inbox.receive(b"\xc1garbage")
    inbox.receive(seal(ALICE, "other", 0, commit()))
    assert inbox.rejected == {"malformed": 1, "wrong_run": 1}


def test_inbox_bounds_the_number_of_senders_it_remembers():
    inbox = Inbox("r", max_senders=3)
    for i in range(5):
        inbox.receive(
            seal(
                Identity.from_seed(bytes([i]) * 32),
                "r",
                0,
                RoundEnd(round=i, accepted=[], rejected=[], penalized=[], audit_secret=H, model_hash=H),
            )
        )
    assert len(inbox._seen) == 3


def _raw(body):
    return msgpack.packb(
        {"v": 1, "run": "r", "type": "Join", "from": H, "seq": 1, "body": body, "sig": bytes(64)}
    )


def test_a_message_nested_hundreds_deep_is_malformed_not_a_crash():
    nested = [1]
    for _ in range(500):
        nested = [nested]
    with pytest.raises(MalformedMessage, match="nested deeper"):
        open_message(_raw({"addrs": nested}), "r")


def test_msgpack_timestamps_and_extension_types_are_malformed_not_a_crash():
    with pytest.raises(MalformedMessage, match="Timestamp"):
        open_message(_raw({msgpack.Timestamp(1, 2): 1, msgpack.Timestamp(3, 4): 2}), "r")
    with pytest.raises(MalformedMessage):
        open_message(_raw({"addrs": [msgpack.ExtType(5, b"x")]}), "r")


def test_a_pinned_sender_is_never_evicted_so_its_messages_stay_unreplayable():
    inbox = Inbox("r", max_senders=2, pinned=frozenset({ALICE.public_key}))
    coordinator_message = seal(ALICE, "r", 7, commit())
    assert inbox.receive(coordinator_message) is not None
    for i in range(10):  # a flood of fresh keys
        inbox.receive(seal(Identity.from_seed(bytes([i + 100]) * 32), "r", 0, commit()))
    assert inbox.receive(coordinator_message) is None and inbox.rejected["replayed"] == 1


def test_a_peer_id_is_the_one_libp2p_derives_from_the_key():
    from libp2p.crypto.ed25519 import Ed25519PublicKey
    from libp2p.peer.id import ID

    expected = ID.from_pubkey(Ed25519PublicKey.from_bytes(ALICE.public_key)).to_string()
    assert peer_id_of(ALICE.public_key) == expected == ALICE.peer_id


def test_a_peer_id_gives_back_its_ed25519_key():
    assert key_of_peer_id(peer_id_of(ALICE.public_key)) == ALICE.public_key


@pytest.mark.parametrize("peer_id", ["", "not-base58-0OIl", "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"])
def test_a_string_that_is_no_ed25519_peer_id_is_refused(peer_id):
    with pytest.raises(ValueError):
        key_of_peer_id(peer_id)


@settings(max_examples=300)
@given(st.data())
def test_mutated_messages_only_ever_raise_message_errors(data):
    raw = bytearray(seal(ALICE, "r", 1, commit()))
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    try:
        open_message(bytes(raw), "r")
    except MessageError:
        pass


@settings(max_examples=300)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_only_ever_raise_message_errors(blob):
    with pytest.raises(MessageError):
        open_message(blob, "r")


def test_a_body_with_mixed_key_types_is_a_message_error_not_a_crash():
    wire = {
        "v": 1,
        "run": "r",
        "type": "Heartbeat",
        "from": ALICE.public_key,
        "seq": 1,
        "body": {1: 2, "round": 3},
        "sig": bytes(64),
    }
    with pytest.raises(MessageError):
        open_message(msgpack.packb(wire, use_bin_type=True), "r")
