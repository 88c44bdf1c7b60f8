"""chain/spec.py and what it generates: fresh files, Anchor's conventions, byte-exact layouts."""

import json
import struct

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from chain import codegen, spec
from chain import instructions as ixs
from chain.spec import Array, Field, Struct
from chain.state import MemberStatus


def test_committed_generated_files_match_the_spec():
    for path, text in codegen.generated().items():
        assert path.read_text() == text, f"{path} is stale: run python -m chain.codegen"


def test_instruction_discriminators_are_the_ones_anchorpy_derives_from_the_idl():
    # anchorpy hashes the IDL's camelCase names back to snake_case itself: the prefixes must agree.
    key = Keypair().pubkey()
    run = ixs.decode_run(key, _run_bytes())
    built = {
        "join": ixs.join(key, run),
        "leave": ixs.leave(key, run),
        "withdraw_stake": ixs.withdraw_stake(key, run),
        "revoke_node": ixs.revoke_node(key, run, key),
    }
    for name, ix in built.items():
        assert bytes(ix.data[:8]) == spec.instruction_discriminator(name)


def test_account_discriminators_are_the_ones_anchorpy_expects():
    coder = ixs.program().account["Run"].coder.accounts
    for acc in spec.ACCOUNTS:
        assert coder.acc_name_to_discriminator[acc.name] == spec.account_discriminator(acc.name)


def test_account_sizes_are_fixed():
    assert spec.account_size(spec.RUN) == 2040  # 1992 + pending params (40) + pending_at (8)
    assert spec.account_size(spec.MEMBER_TABLE) == 8 + 32 + 1024 * 88


def test_errors_are_numbered_from_6000_without_gaps_or_repeats():
    assert [e.code for e in spec.ERRORS] == list(range(6000, 6000 + len(spec.ERRORS)))
    assert len({e.name for e in spec.ERRORS}) == len(spec.ERRORS)


def test_a_misaligned_layout_is_refused():
    bad = Struct("Bad", (Field("flag", "u8"), Field("amount", "u64")))
    with pytest.raises(ValueError, match="Bad.amount is misaligned"):
        spec.check_layout((bad,))


def test_trailing_padding_is_required():
    bad = Struct("Bad2", (Field("amount", "u64"), Field("flag", Array("u8", 1))))
    with pytest.raises(ValueError, match="trailing padding"):
        spec.check_layout((bad,))


def _run_bytes() -> bytes:
    data = bytearray(spec.account_size(spec.RUN))
    data[:8] = spec.account_discriminator("Run")
    return bytes(data)


def test_member_table_decodes_from_explicit_bytes():
    key = Pubkey.from_bytes(bytes(range(32)))
    data = bytearray(spec.account_size(spec.MEMBER_TABLE))
    data[:8] = spec.account_discriminator("MemberTable")
    # slot 1 at 8 (discriminator) + 32 (run key) + 88
    member = struct.pack("<32sQQQQqIIIB3x", bytes(key), 5, 40, 30, 7, -1, 3, 4, 1, MemberStatus.LEFT)
    data[128 : 128 + 88] = member
    decoded = ixs.decode_members(bytes(data), 2)[1]
    assert (decoded.key, decoded.stake, decoded.points_earned, decoded.points_claimed) == (key, 5, 40, 30)
    assert (decoded.joined_round, decoded.unbond_at, decoded.contributions, decoded.validations) == (
        7,
        -1,
        3,
        4,
    )
    assert (decoded.penalties, decoded.status, decoded.unclaimed) == (1, MemberStatus.LEFT, 10)


def test_run_fields_sit_at_the_generated_offsets():
    data = bytearray(_run_bytes())
    offsets = spec.offsets(spec.RUN)
    struct.pack_into("<Q", data, offsets["run_id"], 99)
    struct.pack_into("<Q", data, offsets["last_round"], 12)
    struct.pack_into("<Q", data, offsets["rounds_recorded"], 3)
    struct.pack_into("<I", data, offsets["member_count"], 1024)
    data[offsets["paused"]] = 1
    run = ixs.decode_run(Keypair().pubkey(), bytes(data))
    assert (run.run_id, run.last_recorded_round, run.member_count, run.paused) == (99, 12, 1024, True)


def test_decoding_a_truncated_or_foreign_account_raises():
    with pytest.raises(ValueError, match="not a Run account"):
        ixs.decode_run(Keypair().pubkey(), _run_bytes()[:-1])
    with pytest.raises(ValueError, match="not a Run account"):
        ixs.decode_run(Keypair().pubkey(), bytes(8) + _run_bytes()[8:])


def test_both_idl_formats_describe_the_same_instructions():
    legacy = json.loads(codegen.render_idl())
    current = json.loads(codegen.render_spec_idl())
    assert current["address"] == legacy["metadata"]["address"] == spec.PROGRAM_ID
    for old, new in zip(legacy["instructions"], current["instructions"], strict=True):
        assert codegen._camel(new["name"]) == old["name"]
        assert bytes(new["discriminator"]) == spec.instruction_discriminator(new["name"])
        flags = [(a["isMut"], a["isSigner"]) for a in old["accounts"]]
        assert flags == [(a.get("writable", False), a.get("signer", False)) for a in new["accounts"]]
        assert [codegen._camel(a["name"]) for a in new["args"]] == [a["name"] for a in old["args"]]
