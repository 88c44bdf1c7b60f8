"""`eranos prepare-data`: text, JSONL or Parquet in, token shards and their manifest out.

    eranos prepare-data --tokenizer tokenizer.json -o data/ corpus/*.txt
    eranos prepare-data --tokenizer tokenizer.json -o data/ chats.jsonl \
        --prompt-field prompt --completion-field completion
    eranos prepare-data --tokenizer tokenizer.json -o data/ docs.parquet --field text

Each document is tokenized with the Hugging Face tokenizer (tokenizer.json) and followed by the
end-of-sequence token; the stream is cut into shards of `--shard-tokens` (raw little-endian
uint16, or uint32 for vocabularies over 65,536). With prompt and completion fields, the prompt's
tokens are context only: a `<shard>.mask` file beside each shard says which tokens count in the
loss. The manifest (protocol/manifest.py) names every shard with its sha256; its own hash is
what the run config pins as `data.manifest_sha256`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from node.shard_store import hex_sha256
from protocol.console import HelpFormatter, Parser
from protocol.manifest import TOKENIZER, Manifest, Shard

EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>")


class DataError(ValueError):
    """An input the command cannot read as documents; the message names the file and line."""


def documents(
    path: Path, field: str, prompt: str | None, completion: str | None
) -> Iterator[tuple[str, str]]:
    """(context, text) pairs: context is left out of the loss ('' for plain documents)."""
    if path.suffix == ".jsonl":
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not JSON ({exc.msg})") from None
            yield _pair(row, field, prompt, completion, f"{path}:{number}")
    elif path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
        for number, row in enumerate(pq.read_table(path).to_pylist(), 1):
            yield _pair(row, field, prompt, completion, f"{path} row {number}")
    else:
        yield "", path.read_text(encoding="utf-8", errors="replace")


def _pair(row: object, field: str, prompt: str | None, completion: str | None, where: str) -> tuple[str, str]:
    keys = (prompt, completion) if prompt else ("", field)
    if not isinstance(row, dict) or any(k and not isinstance(row.get(k), str) for k in keys):
        raise DataError(f"{where}: needs string field(s) {', '.join(k for k in keys if k)}")
    return (row[prompt], row[completion]) if prompt else ("", row[field])


class ShardWriter:
    def __init__(self, out: Path, dtype: np.dtype, shard_tokens: int) -> None:
        self.out, self.dtype, self.shard_tokens = out, dtype, shard_tokens
        self.tokens: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.held = 0
        self.shards: list[tuple[str, int]] = []  # name, tokens
        self.any_context = False

    def add(self, tokens: list[int], counted: list[int]) -> None:
        self.tokens.append(np.asarray(tokens, dtype=self.dtype))
        self.masks.append(np.asarray(counted, dtype=np.uint8))
        self.any_context |= not all(counted)
        self.held += len(tokens)
        while self.held >= self.shard_tokens:
            self._write(self.shard_tokens)

    def close(self) -> None:
        if self.held:
            self._write(self.held)

    def _write(self, n: int) -> None:
        tokens, masks = np.concatenate(self.tokens), np.concatenate(self.masks)
        name = f"shard-{len(self.shards):05d}.bin"
        tokens[:n].astype(self.dtype.newbyteorder("<")).tofile(self.out / name)
        masks[:n].tofile(self.out / (name + ".mask"))
        self.shards.append((name, n))
        self.tokens, self.masks, self.held = [tokens[n:]], [masks[n:]], len(tokens) - n


def end_token(tokenizer, wanted: str | None, where: Path) -> int:
    for token in [wanted] if wanted else EOS_CANDIDATES:
        if tokenizer.token_to_id(token) is not None:
            return tokenizer.token_to_id(token)
    raise DataError(f"{where} has no end-of-sequence token {wanted or EOS_CANDIDATES}: pass --eos TOKEN")


def prepare(inputs: list[Path], tokenizer, tokenizer_path: Path, out: Path, args) -> Manifest:
    eos = end_token(tokenizer, args.eos, tokenizer_path)
    vocab = tokenizer.get_vocab_size()
    dtype = np.dtype(np.uint16 if vocab <= 1 << 16 else np.uint32)
    out.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(out, dtype, args.shard_tokens)
    for path in inputs:
        for context, text in documents(path, args.field, args.prompt_field, args.completion_field):
            head = tokenizer.encode(context, add_special_tokens=False).ids if context else []
            body = tokenizer.encode(text, add_special_tokens=False).ids + [eos]
            writer.add(head + body, [0] * len(head) + [1] * len(body))
    writer.close()
    if not writer.shards:
        raise DataError("the inputs hold no text")
    shards = []
    for name, n in writer.shards:
        mask_path = out / (name + ".mask")
        if writer.any_context:
            shards.append(Shard(name, n, hex_sha256(out / name), hex_sha256(mask_path)))
        else:
            mask_path.unlink()
            shards.append(Shard(name, n, hex_sha256(out / name)))
    manifest = Manifest(dtype.name, vocab, hex_sha256(tokenizer_path), tuple(shards))
    (out / "manifest.json").write_text(manifest.dumps())
    if tokenizer_path.resolve() != (out / TOKENIZER).resolve():  # served with the shards
        shutil.copyfile(tokenizer_path, out / TOKENIZER)
    return manifest


def main(argv: list[str] | None = None, prog: str = "eranos prepare-data") -> None:
    p = Parser(prog=prog, description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("inputs", nargs="+", type=Path, help=".txt (or any text), .jsonl or .parquet files")
    p.add_argument("--tokenizer", required=True, type=Path, help="a Hugging Face tokenizer.json")
    p.add_argument("-o", "--out", required=True, type=Path, help="directory for the shards and manifest.json")
    p.add_argument("--field", default="text", help="JSONL/Parquet field holding a document")
    p.add_argument(
        "--prompt-field", help="with --completion-field: chat/SFT pairs, the prompt left out of the loss"
    )
    p.add_argument("--completion-field", help="the field the loss is computed on")
    p.add_argument("--shard-tokens", type=int, default=100_000_000, help="tokens per shard")
    p.add_argument(
        "--eos", help="the end-of-sequence token (default: the first of " + ", ".join(EOS_CANDIDATES) + ")"
    )
    args = p.parse_args(argv)
    if bool(args.prompt_field) != bool(args.completion_field):
        p.error("--prompt-field and --completion-field go together")
    missing = [str(i) for i in [args.tokenizer, *args.inputs] if not i.is_file()]
    if missing:
        p.error(f"no such file: {', '.join(missing)}")
    if args.shard_tokens < 1:
        p.error("--shard-tokens must be positive")
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(args.tokenizer))
    except Exception as exc:  # the tokenizers library reports a bad file as a bare Exception
        raise SystemExit(f"{prog}: {args.tokenizer} is not a Hugging Face tokenizer.json: {exc}") from None
    try:
        manifest = prepare(args.inputs, tokenizer, args.tokenizer, args.out, args)
    except (DataError, OSError, UnicodeDecodeError) as exc:
        raise SystemExit(f"{prog}: {exc}") from None
    masked = " with loss masks" if manifest.masked else ""
    print(f"{manifest.total_tokens:,} tokens in {len(manifest.shards)} shard(s){masked} in {args.out}")
    print(f'pin it in the run config: [data] manifest_sha256 = "{manifest.digest()}"')
