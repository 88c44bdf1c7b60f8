"""A corpus as token shards described by a manifest, which every party reads the same way.

    manifest.json: {"version": 1, "dtype": "uint16", "vocab_size": 32000,
                    "tokenizer_sha256": "...", "total_tokens": 123456,
                    "shards": [{"name": "shard-00000.bin", "tokens": 100000, "sha256": "...",
                                "mask_sha256": "..."}, ...]}

A shard is a file of little-endian token ids (`.bin`, nanoGPT's format, or `.npy`); a shard
with a loss mask has beside it `<name>.mask`, one byte per token (1: the token counts in the
loss, 0: it is context only, as a chat prompt). The manifest's own hash (`Manifest.digest`) is
what a run config pins, so a shard swapped, added or truncated is a different corpus. Parsing is
strict: every field checked, names that could leave the directory refused.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

VERSION = 1
TOKENIZER = "tokenizer.json"  # beside the manifest: the tokenizer its tokenizer_sha256 names
DTYPES = ("uint16", "uint32")
MAX_SHARDS = 1 << 16
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class ManifestError(ValueError):
    """A manifest or a shard does not hold what it must; the message names what and where."""


@dataclass(frozen=True)
class Shard:
    name: str
    tokens: int
    sha256: str
    mask_sha256: str = ""  # of `<name>.mask`; empty: every token counts in the loss

    @property
    def mask_name(self) -> str:
        return self.name + ".mask"


@dataclass(frozen=True)
class Manifest:
    dtype: str
    vocab_size: int
    tokenizer_sha256: str
    shards: tuple[Shard, ...]

    @property
    def total_tokens(self) -> int:
        return sum(s.tokens for s in self.shards)

    @property
    def masked(self) -> bool:
        return any(s.mask_sha256 for s in self.shards)

    def dumps(self) -> str:
        doc = {
            "version": VERSION, "dtype": self.dtype, "vocab_size": self.vocab_size,
            "tokenizer_sha256": self.tokenizer_sha256, "total_tokens": self.total_tokens,
            "shards": [asdict(s) for s in self.shards],
        }  # fmt: skip
        return json.dumps(doc, indent=1, sort_keys=True) + "\n"

    def digest(self) -> str:
        """What a run config pins (`data.manifest_sha256`): the hash of the canonical text."""
        return hashlib.sha256(self.dumps().encode()).hexdigest()


def _field(doc: dict, key: str, kind: type, where: str):
    value = doc.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ManifestError(f"{where}: {key} must be a {kind.__name__}, got {value!r}")
    return value


def _shard(raw: object, i: int) -> Shard:
    where = f"shards[{i}]"
    if not isinstance(raw, dict) or set(raw) - {"name", "tokens", "sha256", "mask_sha256"}:
        raise ManifestError(f"{where}: must hold name, tokens, sha256 and optionally mask_sha256")
    name, tokens = _field(raw, "name", str, where), _field(raw, "tokens", int, where)
    sha, mask = _field(raw, "sha256", str, where), raw.get("mask_sha256", "")
    if not _NAME.fullmatch(name) or not name.endswith((".bin", ".npy")):
        raise ManifestError(f"{where}: name {name!r} must be a plain file name ending in .bin or .npy")
    if not 0 < tokens < 1 << 48:
        raise ManifestError(f"{where}: tokens must be positive, got {tokens}")
    if not _HEX64.fullmatch(sha) or not (mask == "" or (isinstance(mask, str) and _HEX64.fullmatch(mask))):
        raise ManifestError(f"{where}: sha256 and mask_sha256 must be 64 lowercase hex digits")
    return Shard(name, tokens, sha, mask)


def loads(text: str) -> Manifest:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        raise ManifestError(f"not a version {VERSION} manifest")
    dtype = _field(doc, "dtype", str, "manifest")
    if dtype not in DTYPES:
        raise ManifestError(f"manifest: dtype must be one of {DTYPES}, got {dtype!r}")
    vocab = _field(doc, "vocab_size", int, "manifest")
    if not 2 <= vocab <= (1 << 16 if dtype == "uint16" else 1 << 32):
        raise ManifestError(f"manifest: vocab_size {vocab} does not fit {dtype}")
    tokenizer = _field(doc, "tokenizer_sha256", str, "manifest")
    if not _HEX64.fullmatch(tokenizer):
        raise ManifestError("manifest: tokenizer_sha256 must be 64 lowercase hex digits")
    raw_shards = _field(doc, "shards", list, "manifest")
    if not 0 < len(raw_shards) <= MAX_SHARDS:
        raise ManifestError(f"manifest: between 1 and {MAX_SHARDS} shards, got {len(raw_shards)}")
    shards = tuple(_shard(raw, i) for i, raw in enumerate(raw_shards))
    if len({s.name for s in shards}) != len(shards):
        raise ManifestError("manifest: shard names repeat")
    manifest = Manifest(dtype, vocab, tokenizer, shards)
    if doc.get("total_tokens") != manifest.total_tokens:
        raise ManifestError(f"manifest: total_tokens {doc.get('total_tokens')} is not the shards' sum")
    return manifest


def load(path: Path) -> Manifest:
    try:
        return loads(path.read_text())
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror}") from None


def files(path: Path) -> list[Path]:
    """The manifest at `path`, every shard and mask it names, and the tokenizer beside it if there
    is one: what a data provider serves."""
    out = [path] + ([path.parent / TOKENIZER] if (path.parent / TOKENIZER).is_file() else [])
    for shard in load(path).shards:
        out.append(path.parent / shard.name)
        if shard.mask_sha256:
            out.append(path.parent / shard.mask_name)
    return out
