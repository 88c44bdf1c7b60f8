"""Amounts shown with their units, and SOL amounts parsed exactly."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain.units import parse_sol, sol, tokens


def test_lamports_are_shown_in_sol():
    assert sol(100_000_000) == "0.1 SOL"
    assert sol(12 * 10**9) == "12 SOL"
    assert sol(1) == "0.000000001 SOL"


def test_large_amounts_are_grouped():
    assert sol(1_234_500_000_000) == "1,234.5 SOL"


def test_tokens_use_their_decimals():
    assert tokens(1500, 3) == "1.5 tokens"
    assert tokens(40) == "40 tokens"


@given(st.integers(0, 10**18))
def test_shown_sol_parses_back_to_the_same_lamports(lamports):
    assert parse_sol(sol(lamports).removesuffix(" SOL").replace(",", "")) == lamports


@pytest.mark.parametrize("text", ["", "-1", "abc", "1.2.3", "0.0000000001", "1e3"])
def test_malformed_sol_amounts_are_refused(text):
    with pytest.raises(ValueError, match="not an amount of SOL"):
        parse_sol(text)
