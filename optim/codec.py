"""The wire format of one node's compressed step: one payload covering every parameter.

Layout (little-endian), every length implied by the spec or declared before its section:

    header    magic "ERDP" | version u8 | value mode u8 | step u64 | round u64 | origin (32 bytes)
              | spec sha256 (32 bytes)
    table     per tensor: Rice parameter u8 | flags u8 (bit 0: some groups are left out)
    bitmaps   per flagged tensor: one bit per group, set for groups that are sent
    unary     byte length u32, then the unary stream of every gap quotient (see rice.py)
    remainder every gap remainder, b bits each, all tensors in one bit stream
    values    SIGN: 1 bit each (1 = positive); INT8: one fp32 scale per sent group, then int8;
              INT2: one fp32 scale per tensor, then 2 bits each (sign, magnitude);
              BF16: 2 bytes each; RAW: float64 each

The header binds a payload to the step it is for, the round it was sent in and its origin (the
sender's key, opaque bytes here), so a payload cannot be presented for another step, round or
sender without every receiver seeing it: two members' payloads can never be the same bytes.

Indices count units (coefficients, or tiles of them) within a selection group (a chunk, or a
whole tensor: optim/spec.py); a unit carries one value per coefficient, in its tile's order.
A group whose momentum is entirely zero is left out instead of sending k arbitrary indices:
with 1-bit values a zero cannot be expressed, and k votes of +1 would move parameters that have
no gradient. Within a sent group a zero value travels as negative in SIGN mode.

`decode` is strict and total: any malformed input raises a `PayloadError` subclass, checks run
before the work they guard (size before parsing, declared lengths before reading), and the
work done is linear in the payload size, so no input can hang it.
"""

import math
import struct
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from optim import rice
from optim.config import ValueMode
from optim.errors import (
    HeaderError,
    IndexRangeError,
    MalformedSectionError,
    OversizedPayloadError,
    SpecMismatchError,
    TrailingBytesError,
    TruncatedPayloadError,
    ValueRangeError,
)
from optim.spec import CODEC_VERSION, ParamSpec, TensorSpec

MAGIC = b"ERDP"
_HEADER = struct.Struct("<4sBBQQ32s32s")
NO_ORIGIN = bytes(32)  # a payload not bound to a sender (in-process replicas, tests)
_U32 = struct.Struct("<I")
_FLAG_PARTIAL = 1
# No honest momentum coefficient comes near this; bounding it keeps the sum of any number of
# payloads finite (a value at float max beside an honest one made the aggregate inf/NaN).
MAX_VALUE = 1e4
_VALUE_BYTES = {
    ValueMode.SIGN: 1 / 8, ValueMode.INT2: 1 / 4, ValueMode.INT8: 1, ValueMode.BF16: 2, ValueMode.RAW: 8
}  # fmt: skip
# INT2's levels in units of its tensor's scale (the RMS of the values sent): the Lloyd-Max
# quantizer of a unit Gaussian, with the threshold between them at their midpoint so every value
# decodes to its nearest level.
INT2_LEVELS = (0.4528, 1.510)
_INT2_THRESHOLD = sum(INT2_LEVELS) / 2


@dataclass
class TensorPayload:
    groups: np.ndarray  # (A,) int64: increasing ids of the groups sent (chunks, or whole tensors)
    indices: np.ndarray  # (A, k) int64: units, strictly increasing per row, < units
    values: np.ndarray  # (A, k * width) float: unquantized when encoding, as decoded after


@dataclass
class Payload:
    step: int
    tensors: list[TensorPayload]
    round: int = 0
    origin: bytes = NO_ORIGIN


def encode(
    spec: ParamSpec, step: int, tensors: list[TensorPayload], *, round: int = 0, origin: bytes = NO_ORIGIN
) -> bytes:
    if len(origin) != 32:
        raise ValueError(f"origin must be 32 bytes, got {len(origin)}")
    if len(tensors) != len(spec.tensors):
        raise ValueError(f"spec has {len(spec.tensors)} tensors, got {len(tensors)}")
    table, bitmaps, quotients, remainders = bytearray(), [], [], []
    for ts, tp in zip(spec.tensors, tensors):
        partial = len(tp.groups) != ts.groups
        gaps = rice.gaps_from_indices(tp.indices)
        b = rice.best_rice_param(gaps, ts.rice_max)
        table += bytes([b, _FLAG_PARTIAL if partial else 0])
        if partial:
            mask = np.zeros(ts.groups, dtype=np.uint8)
            mask[tp.groups] = 1
            bitmaps.append(np.packbits(mask).tobytes())
        quotients.append(gaps >> b)
        remainders.append(rice.fixed_bits(gaps & ((1 << b) - 1), b))
    unary = np.packbits(rice.unary_bits(np.concatenate(quotients))).tobytes()
    return b"".join(
        [
            _HEADER.pack(MAGIC, CODEC_VERSION, spec.mode, step, round, origin, spec.digest),
            bytes(table),
            *bitmaps,
            _U32.pack(len(unary)),
            unary,
            np.packbits(np.concatenate(remainders)).tobytes(),
            _encode_values(spec.mode, [tp.values for tp in tensors]),
        ]
    )


def decode(spec: ParamSpec, data: bytes, max_bytes: int | None = None) -> Payload:
    limit = max_payload_bytes(spec) if max_bytes is None else max_bytes
    if len(data) > limit:
        raise OversizedPayloadError(f"payload is {len(data)} bytes, limit is {limit}")
    reader = _Reader(data)
    step, round_, origin = _read_header(spec, reader)
    table = bytes(reader.take(2 * len(spec.tensors), "tensor table"))
    params, group_ids = [], []
    for i, ts in enumerate(spec.tensors):
        b, flags = table[2 * i], table[2 * i + 1]
        if b > ts.rice_max or flags not in (0, _FLAG_PARTIAL):
            raise MalformedSectionError(f"{ts.name}: Rice parameter {b} or flags {flags} invalid")
        params.append(b)
    for ts, flags in zip(spec.tensors, table[1::2]):
        group_ids.append(_read_bitmap(ts, reader) if flags else np.arange(ts.groups))
    counts = [len(c) * ts.k for c, ts in zip(group_ids, spec.tensors)]
    gaps = _read_gaps(spec, reader, params, group_ids, counts)
    values = _decode_values(spec.mode, reader, group_ids, [ts.k * ts.width for ts in spec.tensors])
    if reader.pos != len(data):
        raise TrailingBytesError(f"{len(data) - reader.pos} bytes after the last section")
    tensors = []
    for ts, ids, g, v in zip(spec.tensors, group_ids, gaps, values):
        indices = rice.indices_from_gaps(g, ts.k)
        if indices.size and indices[:, -1].max() >= ts.units:
            raise IndexRangeError(f"{ts.name}: index beyond group size {ts.units}")
        tensors.append(TensorPayload(ids, indices, v))
    return Payload(step, tensors, round_, origin)


@lru_cache(maxsize=16)
def max_payload_bytes(spec: ParamSpec) -> int:
    """The largest payload a well-formed encoder can produce for this spec."""
    size = _HEADER.size + 2 * len(spec.tensors) + _U32.size + 2
    index_bits = 0
    for ts in spec.tensors:
        n, k, groups = ts.units, ts.k, ts.groups
        size += math.ceil(groups / 8)
        index_bits += max(groups * (((n - k) >> b) + k + k * b) for b in range(ts.rice_max + 1))
        size += math.ceil(groups * k * ts.width * _VALUE_BYTES[spec.mode])
        size += 4 * groups if spec.mode == ValueMode.INT8 else 0
    size += 4 * len(spec.tensors) if spec.mode == ValueMode.INT2 else 0
    return size + math.ceil(index_bits / 8) + 1


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.data):
            raise TruncatedPayloadError(
                f"payload ends inside {what}: needs {n} bytes at offset {self.pos}, "
                f"{len(self.data) - self.pos} left"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def take_bits(self, n_bits: int, what: str) -> np.ndarray:
        """n_bits packed bits as a 0/1 array; the padding bits of the last byte must be zero."""
        raw = np.frombuffer(self.take(math.ceil(n_bits / 8), what), dtype=np.uint8)
        bits = np.unpackbits(raw)
        if bits[n_bits:].any():
            raise MalformedSectionError(f"{what} has nonzero padding bits")
        return bits[:n_bits]


def _read_header(spec: ParamSpec, reader: _Reader) -> tuple[int, int, bytes]:
    """(step, round, origin) after checking the magic, version and spec."""
    magic, version, mode, step, round_, origin, digest = _HEADER.unpack(reader.take(_HEADER.size, "header"))
    if magic != MAGIC:
        raise HeaderError(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != CODEC_VERSION:
        raise HeaderError(f"unsupported codec version {version}, this node speaks {CODEC_VERSION}")
    if mode != spec.mode or digest != spec.digest:
        raise SpecMismatchError(
            f"payload is for spec {digest.hex()[:16]} mode {mode}, "
            f"this run is {spec.digest.hex()[:16]} mode {int(spec.mode)}"
        )
    return step, round_, bytes(origin)


def _read_bitmap(ts: TensorSpec, reader: _Reader) -> np.ndarray:
    mask = reader.take_bits(ts.groups, f"{ts.name} group bitmap")
    if mask.all():
        raise MalformedSectionError(f"{ts.name}: flagged partial but every group is sent")
    return np.flatnonzero(mask)


def _read_gaps(
    spec: ParamSpec, reader: _Reader, params: list[int], group_ids: list, counts: list[int]
) -> list[np.ndarray]:
    (unary_len,) = _U32.unpack(reader.take(_U32.size, "unary length"))
    bound = sum(
        len(ids) * (((ts.units - ts.k) >> b) + ts.k) for ts, b, ids in zip(spec.tensors, params, group_ids)
    )
    if unary_len > math.ceil(bound / 8):
        raise MalformedSectionError(f"unary stream of {unary_len} bytes exceeds its bound {bound} bits")
    quotients = rice.quotients_from_unary(reader.take(unary_len, "unary stream"), sum(counts))
    remainder_bits = reader.take_bits(sum(c * b for c, b in zip(counts, params)), "remainders")
    gaps, q_at, r_at = [], 0, 0
    for count, b in zip(counts, params):
        r = rice.values_from_fixed(remainder_bits[r_at : r_at + count * b], count, b)
        gaps.append((quotients[q_at : q_at + count] << b) | r)
        q_at, r_at = q_at + count, r_at + count * b
    return gaps


def _encode_values(mode: ValueMode, values: list[np.ndarray]) -> bytes:
    flat = np.concatenate([v.reshape(-1) for v in values]).astype(np.float64)
    if not np.isfinite(flat).all() or (np.abs(flat) > MAX_VALUE).any():
        raise ValueError(f"refusing to encode values that are non-finite or beyond {MAX_VALUE}")
    if mode == ValueMode.SIGN:
        return np.packbits(flat > 0).tobytes()
    if mode == ValueMode.INT8:
        # quantize with the scale as transmitted (fp32), so decoding multiplies by the same number
        scales = [(np.abs(v).max(axis=1, initial=0.0) / 127).astype("<f4") for v in values]
        quantized = [
            np.clip(np.rint(v / np.where(s > 0, s, 1)[:, None]), -127, 127) for v, s in zip(values, scales)
        ]
        all_scales = np.concatenate(scales)
        return (
            all_scales.tobytes()
            + np.concatenate([q.reshape(-1) for q in quantized]).astype(np.int8).tobytes()
        )
    if mode == ValueMode.INT2:
        return _encode_int2(values)
    if mode == ValueMode.BF16:
        bits = flat.astype(np.float32).view(np.uint32)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16  # round to nearest even
        return rounded.astype("<u2").tobytes()
    return flat.astype("<f8").tobytes()


def _encode_int2(values: list[np.ndarray]) -> bytes:
    scales, codes = [], []
    for v in values:
        v = v.reshape(-1).astype(np.float64)
        rms = float(np.sqrt(np.mean(v * v))) if v.size else 0.0
        scale = np.float32(rms if rms > 0 else 1.0)
        scales.append(scale)
        codes.append(np.stack([v > 0, np.abs(v) > _INT2_THRESHOLD * float(scale)], axis=1).reshape(-1))
    return np.array(scales, dtype="<f4").tobytes() + np.packbits(np.concatenate(codes)).tobytes()


def _decode_int2(reader: _Reader, rows: list[int], ks: list[int]) -> np.ndarray:
    with np.errstate(invalid="ignore"):  # a NaN scale is refused just below
        scales = np.frombuffer(reader.take(4 * len(rows), "int2 scales"), dtype="<f4").astype(np.float64)
    if not (np.isfinite(scales) & (scales > 0)).all():
        raise ValueRangeError("int2 scales must be finite and positive")
    counts = np.array(rows) * np.array(ks)
    bits = reader.take_bits(2 * int(counts.sum()), "int2 values").reshape(-1, 2).astype(np.int64)
    levels = np.array(INT2_LEVELS)[bits[:, 1]] * (bits[:, 0] * 2 - 1)
    return levels * np.repeat(scales, counts)


def _decode_values(mode: ValueMode, reader: _Reader, group_ids: list, ks: list[int]) -> list[np.ndarray]:
    rows = [len(ids) for ids in group_ids]
    total = sum(r * k for r, k in zip(rows, ks))
    if mode == ValueMode.SIGN:
        flat = reader.take_bits(total, "sign bits").astype(np.float64) * 2 - 1
    elif mode == ValueMode.INT8:
        with np.errstate(invalid="ignore"):  # a NaN scale is refused just below
            scales = np.frombuffer(reader.take(4 * sum(rows), "int8 scales"), dtype="<f4").astype(np.float64)
        if not (np.isfinite(scales) & (scales > 0)).all():
            raise ValueRangeError("int8 scales must be finite and positive")
        q = np.frombuffer(reader.take(total, "int8 values"), dtype=np.int8)
        if (q == -128).any():
            raise ValueRangeError("int8 value -128 is outside the symmetric range")
        flat = q.astype(np.float64) * np.repeat(scales, np.repeat(ks, rows))
    elif mode == ValueMode.INT2:
        flat = _decode_int2(reader, rows, ks)
    elif mode == ValueMode.BF16:
        half = np.frombuffer(reader.take(2 * total, "bf16 values"), dtype="<u2")
        flat = (half.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    else:
        flat = np.frombuffer(reader.take(8 * total, "raw values"), dtype="<f8").astype(np.float64)
    if not np.isfinite(flat).all() or (np.abs(flat) > MAX_VALUE).any():
        raise ValueRangeError(f"values must be finite and at most {MAX_VALUE} in magnitude")
    out, at = [], 0
    for r, k in zip(rows, ks):
        out.append(flat[at : at + r * k].reshape(r, k))
        at += r * k
    return out
