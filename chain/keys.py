"""Keypairs in solana-keygen's JSON format (a list of 64 byte values: secret then public key)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from solders.keypair import Keypair
from solders.pubkey import Pubkey


def load_keypair(path: str | Path) -> Keypair:
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable solana-keygen keypair file ({exc})") from None
    if not (
        isinstance(raw, list) and len(raw) == 64 and all(isinstance(b, int) and 0 <= b < 256 for b in raw)
    ):
        raise ValueError(f"{path}: a solana-keygen keypair is a JSON list of 64 byte values")
    try:
        return Keypair.from_bytes(bytes(raw))
    except ValueError as exc:
        raise ValueError(f"{path}: the public half does not match the secret ({exc})") from None


def save_keypair(keypair: Keypair, path: str | Path) -> None:
    """Write the keypair readable by its owner only, as solana-keygen does."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(list(bytes(keypair)), f)


def parse_pubkey(text: str) -> Pubkey:
    try:
        return Pubkey.from_string(text)
    except ValueError:
        raise ValueError(f"not a base58 public key: {text!r}") from None
