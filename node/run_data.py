"""The run's training data, as its config says: the stdlib corpus, a text file or directory, a
raw token file, or token shards under a manifest the run pins (checked before training)."""

from pathlib import Path

from node.data import TokenDataset, default_corpus, text_path_corpus, token_file_corpus
from node.shards import shard_corpus
from node.tokenizer import ByteTokenizer
from protocol.manifest import ManifestError
from protocol.manifest import load as load_manifest
from protocol.model_config import preset
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
        corpus, mask = shard_corpus(path.parent, manifest, preset(config.model.preset).vocab_size)
        return TokenDataset(corpus, d.seq_len, d.batch_size, mask=mask)
    if d.corpus == "stdlib":
        corpus = default_corpus(ByteTokenizer())
    elif d.corpus.endswith(".bin"):
        corpus = token_file_corpus(d.corpus)
    else:
        corpus = text_path_corpus(d.corpus, ByteTokenizer())
    return TokenDataset(corpus, d.seq_len, d.batch_size)
