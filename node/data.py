"""Token sources, deterministic batches, and the split into training and validation.

A corpus is one token stream (documents joined by EOS). Its last `val_fraction` is held out for
validation. The training part is cut into non-overlapping sequences of seq_len + 1 tokens (the
last token of one is the first of the next), and a batch id names a fixed set of `batch_seqs`
sequences: batch b of epoch e = b // batches_per_epoch is slice b % batches_per_epoch of a
permutation seeded by (data seed, e). Any party holding the same corpus computes the same batch.
"""

import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from node.tokenizer import Tokenizer

# The stdlib without its test suites and bundled tools: ~11 MB of Python source on CPython 3.11.
_STDLIB_SKIP = {
    "site-packages",
    "__pycache__",
    "test",
    "tests",
    "idlelib",
    "lib2to3",
    "ensurepip",
    "turtledemo",
}


@dataclass(frozen=True)
class Corpus:
    tokens: np.ndarray  # (N,) uint16 or uint32, possibly a memmap
    sha256: str  # of the source bytes, so parties can check they train on the same data
    description: str


def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = (p for p in root.rglob("*.py") if not _STDLIB_SKIP & set(p.relative_to(root).parts))
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def text_corpus(files: list[Path], tokenizer: Tokenizer, description: str) -> Corpus:
    """Text files in the order given, each followed by EOS; hashed over (name, content)."""
    digest, parts = hashlib.sha256(), []
    eos = np.array([tokenizer.eos_id])
    for path in files:
        raw = path.read_bytes()
        digest.update(path.name.encode() + b"\0" + len(raw).to_bytes(8, "little") + raw)
        parts += [tokenizer.encode(raw.decode("utf-8", errors="replace")), eos]
    dtype = np.uint16 if tokenizer.vocab_size <= 65536 else np.uint32
    return Corpus(np.concatenate(parts).astype(dtype), digest.hexdigest(), description)


def default_corpus(tokenizer: Tokenizer) -> Corpus:
    files = stdlib_files()
    return text_corpus(files, tokenizer, f"python stdlib ({len(files)} files)")


def text_path_corpus(path: str | Path, tokenizer: Tokenizer) -> Corpus:
    """A text file, or every file under a directory in sorted path order."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return text_corpus(files, tokenizer, str(path))


def token_file_corpus(path: str | Path, dtype: str = "uint16") -> Corpus:
    """A pre-tokenized file of raw little-endian token ids (nanoGPT's .bin is uint16), memory-mapped."""
    tokens = np.memmap(path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return Corpus(tokens, digest.hexdigest(), str(path))


class TokenDataset:
    def __init__(
        self,
        corpus: Corpus,
        seq_len: int,
        batch_seqs: int,
        val_fraction: float = 0.02,
        seed: int = 0,
        mask: np.ndarray | None = None,  # one 0/1 per token: which tokens count in the loss as targets
    ):
        n_val = max(seq_len + 1, int(len(corpus.tokens) * val_fraction))
        self.train, self.val = corpus.tokens[:-n_val], corpus.tokens[-n_val:]
        self.masked = mask is not None
        self.train_mask, self.val_mask = (mask[:-n_val], mask[-n_val:]) if mask is not None else (None, None)
        self.seq_len, self.batch_seqs, self.seed = seq_len, batch_seqs, seed
        self.n_train_seqs = (len(self.train) - 1) // seq_len
        self.batches_per_epoch = self.n_train_seqs // batch_seqs
        if self.batches_per_epoch < 1:
            raise ValueError(
                f"corpus of {len(corpus.tokens)} tokens holds no batch of {batch_seqs} x {seq_len}"
            )

    def _sequences(self, tokens: np.ndarray, starts: np.ndarray) -> np.ndarray:
        offsets = starts[:, None] * self.seq_len + np.arange(self.seq_len + 1)
        return np.asarray(tokens[offsets], dtype=np.int64)  # (n, seq_len + 1)

    def _starts(self, batch_id: int) -> np.ndarray:
        epoch, at = divmod(batch_id, self.batches_per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n_train_seqs)
        return order[at * self.batch_seqs : (at + 1) * self.batch_seqs]

    def batch(self, batch_id: int) -> np.ndarray:
        """The `batch_seqs` sequences of this batch id: (batch_seqs, seq_len + 1) int64."""
        return self._sequences(self.train, self._starts(batch_id))

    def batch_targets(self, batch_id: int) -> np.ndarray | None:
        """Which targets of this batch count in the loss, (batch_seqs, seq_len) bool; None: all."""
        if self.train_mask is None:
            return None
        return self._sequences(self.train_mask, self._starts(batch_id))[:, 1:].astype(bool)

    def prefetch(self, batch_ids) -> None:
        """Nothing to fetch: the whole corpus is in memory."""

    def val_batches(self, max_seqs: int) -> np.ndarray:
        """The first `max_seqs` validation sequences (fewer if the split is short)."""
        n = min(max_seqs, (len(self.val) - 1) // self.seq_len)
        return self._sequences(self.val, np.arange(n))
