"""The run's training data, as its config says: the stdlib corpus, a text file or directory, a
raw token file, or token shards under a manifest the run pins (checked before training); and
its multiple-choice evaluation tasks, pinned the same way."""

import hashlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from node.data import TokenDataset, default_corpus, text_path_corpus, token_file_corpus
from node.shard_store import Cache, ShardStore, hex_sha256
from node.sharded_data import ShardedDataset
from node.tokenizer import ByteTokenizer
from protocol.eval_tasks import MAX_BYTES as TASKS_LIMIT
from protocol.eval_tasks import EvalTasksError, Task, loads
from protocol.manifest import TOKENIZER, ManifestError
from protocol.manifest import load as load_manifest
from protocol.run_config import RunConfig


def build_data(config: RunConfig, cache: Cache | None = None) -> TokenDataset | ShardedDataset:
    """The run's training data, checked; ManifestError (a ValueError) naming what is wrong. Shards
    are all checked now, unless they come from a `cache` (then each on its first use)."""
    d = config.data
    if d.manifest:
        store = shard_store(config, cache)
        if cache is None:
            store.check_all()
        return ShardedDataset(store, d.seq_len, d.batch_size)
    if d.corpus == "stdlib":
        corpus = default_corpus(ByteTokenizer())
    elif d.corpus.endswith(".bin"):
        corpus = token_file_corpus(d.corpus)
    else:
        corpus = text_path_corpus(d.corpus, ByteTokenizer())
    return TokenDataset(corpus, d.seq_len, d.batch_size)


def shard_store(config: RunConfig, cache: Cache | None = None) -> ShardStore:
    """The run's shards under its manifest, which must be the one the run pins."""
    d = config.data
    path = Path(d.manifest)
    manifest = load_manifest(path)
    if d.manifest_sha256 and manifest.digest() != d.manifest_sha256:
        raise ManifestError(
            f"{path} is not the run's data: sha256 {manifest.digest()}, the run pins {d.manifest_sha256}"
        )
    return ShardStore(path.parent, manifest, config.model.model_config().vocab_size, cache)


MANIFEST_LIMIT = 64 << 20  # bytes a fetched manifest may have


def fetch_manifest(host, peers: list[str], config: RunConfig, cache: Path) -> RunConfig:
    """The run's manifest, by its pinned sha256, from `peers` into `cache` (its shards follow on
    demand: shard_fetcher); the config pointing at it."""
    d = config.data
    if not d.manifest_sha256:
        raise ManifestError(f"{d.manifest} is not here and the run pins no manifest_sha256 to fetch it by")
    cache.mkdir(parents=True, exist_ok=True)
    local = cache / "manifest.json"
    _fetch(host, peers, d.manifest_sha256, MANIFEST_LIMIT, local)
    return replace(config, data=replace(d, manifest=str(local)))


TOKENIZER_LIMIT = 64 << 20  # bytes a fetched tokenizer.json may have


def fetch_tokenizer(host, peers: list[str], config: RunConfig) -> None:
    """The tokenizer the run's manifest names, by its sha256, beside the fetched manifest (for
    the checkpoints this node writes)."""
    path = Path(config.data.manifest)
    _fetch(host, peers, load_manifest(path).tokenizer_sha256, TOKENIZER_LIMIT, path.parent / TOKENIZER)


def run_tokenizer(config: RunConfig) -> Path | None:
    """The tokenizer.json beside the run's manifest, if it is the one the manifest names."""
    if not config.data.manifest:
        return None
    path = Path(config.data.manifest).parent / TOKENIZER
    if not path.is_file() or hex_sha256(path) != load_manifest(Path(config.data.manifest)).tokenizer_sha256:
        return None
    return path


def shard_fetcher(host, peers: Callable[[], list[str]]):
    """Fetch a shard by hash from the data providers `peers()` names at the time."""
    return lambda sha256, limit, dest: _fetch(host, peers(), sha256, limit, dest)


def fetch_eval_tasks(host, peers: list[str], config: RunConfig, cache: Path) -> RunConfig:
    """The run's tasks file, unless it is here, from `peers` by its pinned sha256 into `cache`;
    the config pointing at it."""
    e = config.eval
    if not e.tasks or Path(e.tasks).is_file():
        return config
    cache.mkdir(parents=True, exist_ok=True)
    dest = cache / f"tasks-{e.tasks_sha256[:16]}.eval.json"
    _fetch(host, peers, e.tasks_sha256, TASKS_LIMIT, dest)
    return replace(config, eval=replace(e, tasks=str(dest)))


def eval_tasks(config: RunConfig) -> list[Task]:
    """The run's evaluation tasks, checked against the pinned hash and the model; [] for none."""
    e = config.eval
    if not e.tasks:
        return []
    data = Path(e.tasks).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != e.tasks_sha256:
        raise EvalTasksError(
            f"{e.tasks} is not the run's tasks: sha256 {digest}, the run pins {e.tasks_sha256}"
        )
    model = config.model.model_config()
    return loads(data, model.vocab_size, model.max_seq_len)


def _fetch(host, peers: list[str], sha256: str, limit: int, dest: Path) -> None:
    if dest.is_file() and hex_sha256(dest) == sha256:
        return
    host.fetch(bytes.fromhex(sha256), size_limit=limit, peers=peers, dest=dest)
