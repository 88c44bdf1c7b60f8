"""The run's training data, as its config says: the stdlib corpus, a text file or directory, a
raw token file, or token shards under a manifest the run pins (checked before training); and
its multiple-choice evaluation tasks, pinned the same way."""

import hashlib
from dataclasses import replace
from pathlib import Path

from node.data import TokenDataset, default_corpus, text_path_corpus, token_file_corpus
from node.shards import hex_sha256, shard_corpus
from node.tokenizer import ByteTokenizer
from protocol.eval_tasks import MAX_BYTES as TASKS_LIMIT
from protocol.eval_tasks import EvalTasksError, Task, loads
from protocol.manifest import ManifestError
from protocol.manifest import load as load_manifest
from protocol.run_config import RunConfig


def build_data(config: RunConfig) -> TokenDataset:
    """The run's training data, checked; ManifestError (a ValueError) naming what is wrong."""
    d = config.data
    if d.manifest:
        path = Path(d.manifest)
        manifest = load_manifest(path)
        if d.manifest_sha256 and manifest.digest() != d.manifest_sha256:
            raise ManifestError(
                f"{path} is not the run's data: sha256 {manifest.digest()}, the run pins {d.manifest_sha256}"
            )
        corpus, mask = shard_corpus(path.parent, manifest, config.model.model_config().vocab_size)
        return TokenDataset(corpus, d.seq_len, d.batch_size, mask=mask)
    if d.corpus == "stdlib":
        corpus = default_corpus(ByteTokenizer())
    elif d.corpus.endswith(".bin"):
        corpus = token_file_corpus(d.corpus)
    else:
        corpus = text_path_corpus(d.corpus, ByteTokenizer())
    return TokenDataset(corpus, d.seq_len, d.batch_size)


MANIFEST_LIMIT = 64 << 20  # bytes a fetched manifest may have


def fetch_shards(host, peers: list[str], config: RunConfig, cache: Path) -> RunConfig:
    """The run's manifest (by its pinned sha256) and shards (by theirs) from `peers` into
    `cache`, each verified by the blob protocol's hash check; the config pointing at them.
    Files already cached and matching are kept."""
    d = config.data
    if not d.manifest_sha256:
        raise ManifestError(f"{d.manifest} is not here and the run pins no manifest_sha256 to fetch it by")
    cache.mkdir(parents=True, exist_ok=True)
    local = cache / "manifest.json"
    _fetch(host, peers, d.manifest_sha256, MANIFEST_LIMIT, local)
    manifest = load_manifest(local)
    itemsize = 2 if manifest.dtype == "uint16" else 4
    for s in manifest.shards:
        _fetch(host, peers, s.sha256, s.tokens * itemsize + 4096, cache / s.name)
        if s.mask_sha256:
            _fetch(host, peers, s.mask_sha256, s.tokens, cache / s.mask_name)
    return replace(config, data=replace(d, manifest=str(local)))


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
