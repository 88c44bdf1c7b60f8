import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optim.codec import MAGIC, TensorPayload, decode, encode, max_payload_bytes
from optim.config import ValueMode
from optim.errors import (
    HeaderError,
    IndexRangeError,
    MalformedSectionError,
    OversizedPayloadError,
    PayloadError,
    SpecMismatchError,
    TrailingBytesError,
    TruncatedPayloadError,
    ValueRangeError,
)
from optim.spec import ParamSpec

SHAPES = [("w", (16, 24)), ("b", (13,)), ("conv", (2, 3, 5, 9))]


def make_spec(mode=ValueMode.RAW, topk=3, shapes=SHAPES, select="chunk", tile=1):
    return ParamSpec.build(shapes, chunk=8, topk=topk, mode=mode, select=select, tile=tile)


def random_payload(spec, rng, drop_chunks=False):
    tensors = []
    for ts in spec.tensors:
        keep = rng.random(ts.groups) < 0.6 if drop_chunks else np.ones(ts.groups, bool)
        groups = np.flatnonzero(keep)
        idx = np.sort(np.argsort(rng.random((len(groups), ts.units)), axis=1)[:, : ts.k], axis=1)
        tensors.append(TensorPayload(groups, idx, rng.standard_normal((len(groups), ts.k * ts.width))))
    return tensors


def assert_same_positions(decoded, sent):
    for d, s in zip(decoded.tensors, sent):
        assert np.array_equal(d.groups, s.groups)
        assert np.array_equal(d.indices, s.indices)


@pytest.mark.parametrize("drop_chunks", [False, True])
def test_raw_mode_round_trips_exactly(drop_chunks):
    spec, rng = make_spec(), np.random.default_rng(0)
    sent = random_payload(spec, rng, drop_chunks)
    decoded = decode(spec, encode(spec, 7, sent))
    assert decoded.step == 7
    assert_same_positions(decoded, sent)
    for d, s in zip(decoded.tensors, sent):
        assert np.array_equal(d.values, s.values)


def test_sign_mode_sends_only_the_sign():
    spec = make_spec(ValueMode.SIGN)
    sent = random_payload(spec, np.random.default_rng(1))
    for d, s in zip(decode(spec, encode(spec, 0, sent)).tensors, sent):
        assert np.array_equal(d.values, np.where(s.values > 0, 1.0, -1.0))


def test_int8_mode_is_within_half_a_step_of_each_chunks_scale():
    spec = make_spec(ValueMode.INT8)
    sent = random_payload(spec, np.random.default_rng(2))
    for d, s in zip(decode(spec, encode(spec, 0, sent)).tensors, sent):
        scale = np.abs(s.values).max(axis=1, keepdims=True) / 127
        assert (np.abs(d.values - s.values) <= scale.astype(np.float32) / 2 * (1 + 1e-6)).all()


def test_int2_mode_decodes_each_value_to_the_nearest_of_four_levels_of_its_tensors_rms():
    spec = make_spec(ValueMode.INT2)
    sent = random_payload(spec, np.random.default_rng(6))
    for d, s in zip(decode(spec, encode(spec, 0, sent)).tensors, sent):
        rms = np.float32(np.sqrt(np.mean(s.values**2)))
        levels = np.array([-1.510, -0.4528, 0.4528, 1.510]) * float(rms)
        nearest = levels[np.abs(s.values[..., None] - levels).argmin(axis=-1)]
        assert np.array_equal(d.values, nearest)


def test_int2_values_cost_a_quarter_byte_each_and_a_scale_per_tensor():
    shapes = [("w", (16, 24))]  # 6 chunks of 8 x 8, 3 values each
    sizes = {m: len(encode(make_spec(m, shapes=shapes), 0, random_payload(make_spec(m, shapes=shapes),
             np.random.default_rng(7)))) for m in (ValueMode.SIGN, ValueMode.INT2)}  # fmt: skip
    assert sizes[ValueMode.INT2] - sizes[ValueMode.SIGN] == 4 + 5 - 3  # a scale; 36 bits, not 18


def test_bf16_mode_rounds_to_bfloat16():
    spec = make_spec(ValueMode.BF16)
    sent = random_payload(spec, np.random.default_rng(3))
    for d, s in zip(decode(spec, encode(spec, 0, sent)).tensors, sent):
        assert np.allclose(d.values, s.values, rtol=2**-8, atol=0)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(list(ValueMode)),
    st.integers(1, 70),
    st.integers(0, 2**32),
    st.booleans(),
    st.sampled_from(["chunk", "tensor"]),
    st.sampled_from([1, 2, 4]),
)
def test_every_mode_round_trips_positions(mode, topk, seed, drop_chunks, select, tile):
    spec = make_spec(mode, topk, select=select, tile=tile)
    sent = random_payload(spec, np.random.default_rng(seed), drop_chunks)
    data = encode(spec, seed, sent)
    assert len(data) <= max_payload_bytes(spec)
    assert_same_positions(decode(spec, data), sent)


@pytest.fixture
def payload():
    spec = make_spec()
    return spec, encode(spec, 3, random_payload(spec, np.random.default_rng(4)))


def test_wrong_magic_is_a_header_error(payload):
    spec, data = payload
    with pytest.raises(HeaderError, match="magic"):
        decode(spec, b"XXXX" + data[4:])


def test_unknown_version_is_a_header_error(payload):
    spec, data = payload
    with pytest.raises(HeaderError, match="version 9"):
        decode(spec, data[:4] + bytes([9]) + data[5:])


def test_payload_for_another_spec_is_rejected(payload):
    _, data = payload
    with pytest.raises(SpecMismatchError):
        decode(make_spec(topk=4), data)


def test_payload_for_another_value_mode_is_rejected():
    sign = make_spec(ValueMode.SIGN)
    data = encode(sign, 0, random_payload(sign, np.random.default_rng(5)))
    with pytest.raises(SpecMismatchError):
        decode(make_spec(ValueMode.BF16), data)


def test_truncated_payload_is_rejected(payload):
    spec, data = payload
    with pytest.raises(TruncatedPayloadError):
        decode(spec, data[:-1])


def test_trailing_bytes_are_rejected(payload):
    spec, data = payload
    with pytest.raises(TrailingBytesError):
        decode(spec, data + b"\0")


def test_payload_over_the_limit_is_rejected_before_parsing(payload):
    spec, data = payload
    with pytest.raises(OversizedPayloadError):
        decode(spec, data, max_bytes=len(data) - 1)
    with pytest.raises(OversizedPayloadError):
        decode(spec, MAGIC + bytes(max_payload_bytes(spec)))


def test_index_beyond_the_chunk_is_rejected():
    spec = make_spec(shapes=[("w", (8, 8))])
    sent = [TensorPayload(np.array([0]), np.array([[1, 2, 64]]), np.ones((1, 3)))]
    with pytest.raises(IndexRangeError):
        decode(spec, encode(spec, 0, sent))


def test_selecting_over_a_tensor_makes_it_one_group_with_its_chunks_share_of_k():
    (w, b, conv) = make_spec(select="tensor").tensors
    assert (w.groups, w.group_numel, w.k) == (1, 384, 18)  # 6 chunks of 8 x 8, 3 per 64 entries
    assert (b.groups, b.group_numel, b.k) == (1, 14, 1)  # 2 chunks of 7; 3 * 13 / 64 rounds to 1, not 0
    assert (conv.groups, conv.group_numel, conv.k) == (1, 300, 13)  # 12 chunks of 5 x 5; 3 * 270 / 64


def test_an_index_beyond_the_tensor_is_rejected():
    spec = make_spec(shapes=[("w", (8, 16))], select="tensor")
    sent = [TensorPayload(np.array([0]), np.array([[1, 2, 3, 4, 5, 128]]), np.ones((1, 6)))]
    with pytest.raises(IndexRangeError):
        decode(spec, encode(spec, 0, sent))


def test_tiles_make_units_of_neighbouring_coefficients_and_send_topk_coefficients_worth_of_them():
    (w, b, conv) = make_spec(topk=8, select="tensor", tile=2).tensors
    assert (w.tile, w.units, w.k) == ((2, 2), 96, 12)  # 6 chunks of 8 x 8: 16 tiles each; 8 * 6 / 4
    assert (b.tile, b.units, b.k) == ((1, 2), 6, 1)  # 2 chunks of 1 x 7: 3 tiles of 1 x 2 each
    assert (conv.tile, conv.units, conv.k) == ((2, 2), 48, 8)  # 12 chunks of 5 x 5: 4 whole tiles each


def test_a_tile_index_beyond_the_tensor_is_rejected():
    spec = make_spec(shapes=[("w", (8, 8))], topk=8, tile=2)  # 16 tiles of 4, 2 sent
    sent = [TensorPayload(np.array([0]), np.array([[3, 16]]), np.ones((1, 8)))]
    with pytest.raises(IndexRangeError):
        decode(spec, encode(spec, 0, sent))


def test_the_tile_is_part_of_the_spec():
    assert make_spec(tile=2).digest != make_spec().digest
    assert make_spec(tile=1).digest == make_spec().digest


def test_the_selection_is_part_of_the_spec():
    assert make_spec(select="tensor").digest != make_spec().digest
    one_chunk = [("w", (8, 8))]
    assert make_spec(shapes=one_chunk, select="tensor").digest == make_spec(shapes=one_chunk).digest


def test_non_finite_value_is_rejected(payload):
    spec, data = payload
    with pytest.raises(ValueRangeError, match="finite"):
        decode(spec, data[:-8] + struct.pack("<d", float("nan")))


def test_a_value_no_honest_encoder_produces_is_rejected(payload):
    spec, data = payload
    with pytest.raises(ValueRangeError, match="magnitude"):
        decode(spec, data[:-8] + struct.pack("<d", 1.7e308))  # beside honest ones: inf in the sum


def test_an_int8_scale_that_makes_values_huge_is_rejected():
    spec = make_spec(ValueMode.INT8, shapes=[("w", (8, 8))])
    data = encode(spec, 0, [TensorPayload(np.array([0]), np.array([[0, 1, 2]]), np.ones((1, 3)))])
    with pytest.raises(ValueRangeError, match="magnitude"):
        decode(spec, data[:-7] + struct.pack("<f", 3e38) + data[-3:])


def test_the_encoder_refuses_values_beyond_the_bound():
    spec = make_spec(shapes=[("w", (8, 8))])
    with pytest.raises(ValueError):
        encode(spec, 0, [TensorPayload(np.array([0]), np.array([[0, 1, 2]]), np.full((1, 3), 1e5))])


def test_int8_minimum_is_outside_the_symmetric_range():
    spec = make_spec(ValueMode.INT8, shapes=[("w", (8, 8))])
    data = encode(spec, 0, [TensorPayload(np.array([0]), np.array([[0, 1, 2]]), np.ones((1, 3)))])
    with pytest.raises(ValueRangeError, match="-128"):
        decode(spec, data[:-1] + b"\x80")


def test_zero_int8_scale_is_rejected():
    spec = make_spec(ValueMode.INT8, shapes=[("w", (8, 8))])
    data = encode(spec, 0, [TensorPayload(np.array([0]), np.array([[0, 1, 2]]), np.ones((1, 3)))])
    with pytest.raises(ValueRangeError, match="scale"):
        decode(spec, data[:-7] + bytes(4) + data[-3:])


def test_an_int2_scale_that_is_zero_or_makes_values_huge_is_rejected():
    spec = make_spec(ValueMode.INT2, shapes=[("w", (8, 8))])
    data = encode(spec, 0, [TensorPayload(np.array([0]), np.array([[0, 1, 2]]), np.ones((1, 3)))])
    with pytest.raises(ValueRangeError, match="scale"):
        decode(spec, data[:-5] + bytes(4) + data[-1:])
    with pytest.raises(ValueRangeError, match="magnitude"):
        decode(spec, data[:-5] + struct.pack("<f", 3e38) + data[-1:])


def test_rice_parameter_beyond_the_chunk_is_malformed(payload):
    spec, data = payload
    table_at = 86  # after the header: magic, version, mode, step, round, origin, spec digest
    with pytest.raises(MalformedSectionError, match="Rice"):
        decode(spec, data[:table_at] + bytes([40]) + data[table_at + 1 :])


def test_encoder_refuses_non_finite_values():
    spec = make_spec(shapes=[("w", (8, 8))])
    with pytest.raises(ValueError):
        encode(spec, 0, [TensorPayload(np.array([0]), np.array([[0, 1, 2]]), np.full((1, 3), np.inf))])


def check_decoded_is_well_formed(spec, decoded):
    for ts, tp in zip(spec.tensors, decoded.tensors):
        assert tp.indices.shape == (len(tp.groups), ts.k)
        assert tp.values.shape == (len(tp.groups), ts.k * ts.width)
        if tp.indices.size:
            assert (np.diff(tp.indices, axis=1) > 0).all()
            assert tp.indices.min() >= 0 and tp.indices.max() < ts.units
            assert np.isfinite(tp.values).all()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(list(ValueMode)), st.integers(0, 2**32), st.data())
def test_mutated_payloads_only_ever_raise_payload_error(mode, seed, data):
    spec = make_spec(
        mode, select=data.draw(st.sampled_from(["chunk", "tensor"])), tile=data.draw(st.sampled_from([1, 2]))
    )
    raw = bytearray(encode(spec, 0, random_payload(spec, np.random.default_rng(seed), drop_chunks=True)))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] ^= data.draw(st.integers(1, 255))
    try:
        check_decoded_is_well_formed(spec, decode(spec, bytes(raw)))
    except PayloadError:
        pass


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(list(ValueMode)), st.integers(0, 2**32), st.data())
def test_truncated_or_extended_payloads_raise_payload_error(mode, seed, data):
    spec = make_spec(mode, tile=data.draw(st.sampled_from([1, 2])))
    raw = encode(spec, 0, random_payload(spec, np.random.default_rng(seed)))
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(PayloadError):
        decode(spec, raw[:cut])
    with pytest.raises(PayloadError):
        decode(spec, raw + data.draw(st.binary(min_size=1, max_size=64)))


@settings(max_examples=200)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_only_ever_raise_payload_error(blob):
    spec = make_spec(ValueMode.SIGN)
    for candidate in (blob, MAGIC + bytes([1, int(spec.mode)]) + bytes(8) + spec.digest + blob):
        try:
            check_decoded_is_well_formed(spec, decode(spec, candidate))
        except PayloadError:
            pass
