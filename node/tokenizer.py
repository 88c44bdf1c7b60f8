"""Tokenizers: bytes by default (no files needed), or a local Hugging Face tokenizer.json."""

from pathlib import Path
from typing import Protocol

import numpy as np


class Tokenizer(Protocol):
    vocab_size: int
    eos_id: int

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids: np.ndarray) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes 0-255, then BOS 256, EOS 257, PAD 258."""

    vocab_size = 259
    bos_id, eos_id, pad_id = 256, 257, 258

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16)

    def decode(self, ids: np.ndarray) -> str:
        ids = np.asarray(ids)
        return bytes(ids[ids < 256].astype(np.uint8)).decode("utf-8", errors="replace")


class HFTokenizer:
    """A tokenizer.json from a local directory or file; nothing is downloaded."""

    def __init__(self, path: str | Path):
        from tokenizers import Tokenizer as _Tokenizer

        path = Path(path)
        self._tok = _Tokenizer.from_file(str(path / "tokenizer.json" if path.is_dir() else path))
        self.vocab_size = self._tok.get_vocab_size()
        eos = next(
            (
                t
                for t in ("</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>")
                if self._tok.token_to_id(t) is not None
            ),
            None,
        )
        if eos is None:
            raise ValueError(f"{path}: no end-of-text token found")
        self.eos_id = self._tok.token_to_id(eos)

    def encode(self, text: str) -> np.ndarray:
        dtype = np.uint16 if self.vocab_size <= 65536 else np.uint32
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=dtype)

    def decode(self, ids: np.ndarray) -> str:
        return self._tok.decode([int(i) for i in ids])


def load_tokenizer(path: str | Path | None) -> Tokenizer:
    return ByteTokenizer() if path is None else HFTokenizer(path)
