import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from optim import rice


@st.composite
def sorted_rows(draw):
    n = draw(st.integers(1, 300))
    k = draw(st.integers(1, n))
    rows = draw(st.integers(0, 5))
    return n, np.array(
        [
            sorted(draw(st.lists(st.integers(0, n - 1), min_size=k, max_size=k, unique=True)))
            for _ in range(rows)
        ],
        dtype=np.int64,
    ).reshape(rows, k)


@given(sorted_rows())
def test_gaps_round_trip_to_the_same_indices(case):
    _, idx = case
    gaps = rice.gaps_from_indices(idx)
    assert (gaps >= 0).all()
    assert np.array_equal(rice.indices_from_gaps(gaps, idx.shape[1]), idx)


@given(st.lists(st.integers(0, 10_000), max_size=200))
def test_unary_stream_round_trips(quotients):
    q = np.array(quotients, dtype=np.int64)
    stream = np.packbits(rice.unary_bits(q)).tobytes()
    assert np.array_equal(rice.quotients_from_unary(stream, len(q)), q)


@given(st.lists(st.integers(0, 2**12 - 1), max_size=200), st.integers(12, 16))
def test_fixed_width_fields_round_trip(values, width):
    v = np.array(values, dtype=np.int64)
    assert np.array_equal(rice.values_from_fixed(rice.fixed_bits(v, width), len(v), width), v)


def test_unary_example_bits():
    assert rice.unary_bits(np.array([0, 2, 1])).tolist() == [1, 0, 0, 1, 0, 1]


@given(st.lists(st.integers(0, 5000), min_size=1, max_size=300), st.integers(0, 13))
def test_best_rice_parameter_is_the_smallest_minimiser_of_the_coded_size(gaps, max_param):
    g = np.array(gaps, dtype=np.int64)
    costs = [int((g >> b).sum() + g.size * (b + 1)) for b in range(max_param + 1)]
    assert rice.best_rice_param(g, max_param) == int(np.argmin(costs))


@pytest.mark.parametrize("k", [4, 8, 16, 32, 64])
def test_uniform_subsets_code_within_5_percent_of_the_entropy_bound(k):
    rng = np.random.default_rng(k)
    n, chunks = 4096, 2000
    idx = np.sort(np.argsort(rng.random((chunks, n)), axis=1)[:, :k], axis=1)
    gaps = rice.gaps_from_indices(idx)
    b = rice.best_rice_param(gaps, 12)
    bits = (gaps >> b).sum() + gaps.size * (b + 1)
    bound = chunks * (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)
    assert bits / bound <= 1.05
