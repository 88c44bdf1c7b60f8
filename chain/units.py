"""Amounts as people read them: lamports in SOL, reward tokens with their mint's decimals."""

from __future__ import annotations

LAMPORTS_PER_SOL = 10**9


def _decimal(amount: int, decimals: int) -> str:
    whole, frac = divmod(amount, 10**decimals)
    text = f"{whole:,}"
    frac_text = f"{frac:0{decimals}d}".rstrip("0") if decimals else ""
    return f"{text}.{frac_text}" if frac_text else text


def sol(lamports: int) -> str:
    """`sol(100_000_000)` -> '0.1 SOL'."""
    return f"{_decimal(lamports, 9)} SOL"


def tokens(amount: int, decimals: int = 0) -> str:
    """`tokens(1500, 3)` -> '1.5 tokens'."""
    return f"{_decimal(amount, decimals)} tokens"


def parse_sol(text: str) -> int:
    """'0.1' -> 100_000_000 lamports; refuses negative, non-numeric or sub-lamport amounts."""
    try:
        whole, _, frac = text.strip().partition(".")
        if not (whole or frac) or not (whole or "0").isdigit() or (frac and not frac.isdigit()):
            raise ValueError
        if len(frac) > 9:
            raise ValueError
        return int(whole or "0") * LAMPORTS_PER_SOL + int(frac.ljust(9, "0") or "0")
    except ValueError:
        raise ValueError(f"not an amount of SOL: {text!r} (e.g. 1 or 0.25)") from None
