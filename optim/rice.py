"""Index coding: sorted per-chunk indices as gaps, Golomb-Rice coded, fully vectorized.

A chunk's k sorted indices i_0 < ... < i_{k-1} become gaps g_0 = i_0, g_j = i_j - i_{j-1} - 1 >= 0,
so duplicate or unsorted indices cannot be expressed at all. Each gap is split by a per-tensor
Rice parameter b into a quotient q = g >> b and a remainder r = g & (2^b - 1).

The two parts travel in separate streams so both directions vectorize without a bit-serial loop:
the quotients as one unary stream (q zero bits then a one; the ones are the code boundaries, so
decoding is a `flatnonzero` and a `diff`), the remainders as fixed-width b-bit fields. The cost is
the same as interleaved Rice codes. On uniform random k-subsets of 4096 this is about 2% above the
entropy bound log2 C(n, k); see BENCHMARKS.md for measured DCT top-k positions.
"""

import numpy as np

from optim.errors import MalformedSectionError


def gaps_from_indices(indices: np.ndarray) -> np.ndarray:
    """(A, k) strictly increasing indices per row -> (A * k,) gaps >= 0."""
    gaps = np.diff(indices, axis=1, prepend=-1) - 1
    return gaps.reshape(-1)


def indices_from_gaps(gaps: np.ndarray, k: int) -> np.ndarray:
    """(A * k,) gaps -> (A, k) strictly increasing indices per row."""
    return np.cumsum(gaps.reshape(-1, k) + 1, axis=1) - 1


def best_rice_param(gaps: np.ndarray, max_param: int) -> int:
    """The smallest b in [0, max_param] that minimises the coded size of these gaps.

    The size f(b) = sum(g >> b) + count * (b + 1) is discrete-convex in b (its first difference
    count - sum((g >> b) - (g >> (b + 1))) never decreases), so walking downhill from the
    estimate log2(mean gap) reaches the global minimum in a few passes instead of max_param.
    """
    if gaps.size == 0:
        return 0

    def cost(b: int) -> int:
        return int((gaps >> b).sum()) + gaps.size * b

    b = min(max_param, int(np.log2(gaps.mean() + 1)))
    while b > 0 and cost(b - 1) <= cost(b):
        b -= 1
    while b < max_param and cost(b + 1) < cost(b):
        b += 1
    return b


def unary_bits(quotients: np.ndarray) -> np.ndarray:
    """Quotients -> 0/1 array: q zeros then a one, per quotient."""
    ends = np.cumsum(quotients + 1) - 1
    bits = np.zeros(int(ends[-1]) + 1 if ends.size else 0, dtype=np.uint8)
    bits[ends] = 1
    return bits


def quotients_from_unary(stream: bytes, count: int) -> np.ndarray:
    """Packed unary stream -> exactly `count` quotients; the stream must end within a byte of the last."""
    ends = np.flatnonzero(np.unpackbits(np.frombuffer(stream, dtype=np.uint8)))
    if ends.size != count:
        raise MalformedSectionError(f"unary stream holds {ends.size} codes, expected {count}")
    if count and ends[-1] < 8 * (len(stream) - 1):
        raise MalformedSectionError("unary stream has whole bytes after its last code")
    return np.diff(ends, prepend=-1) - 1


def _container(width: int) -> np.dtype:
    """The smallest big-endian unsigned type that holds `width` bits."""
    return np.dtype(">u2") if width <= 16 else np.dtype(">u4") if width <= 32 else np.dtype(">u8")


def fixed_bits(values: np.ndarray, width: int) -> np.ndarray:
    """Non-negative values < 2^width -> 0/1 array of width bits each, most significant first."""
    container = _container(width)
    bits = np.unpackbits(values.astype(container).view(np.uint8)).reshape(-1, 8 * container.itemsize)
    return bits[:, bits.shape[1] - width :].reshape(-1)


def values_from_fixed(bits: np.ndarray, count: int, width: int) -> np.ndarray:
    """Inverse of fixed_bits: `count` values from count * width bits."""
    container = _container(width)
    padded = np.zeros((count, 8 * container.itemsize), dtype=np.uint8)
    padded[:, padded.shape[1] - width :] = bits.reshape(count, width)
    return np.packbits(padded.reshape(-1)).view(container).astype(np.int64)
