"""Batches from token shards (node/sharded_data.py) and the shard cache under them
(node/shard_store.py): what every party computes the same way, what a node fetches and when, and
what it keeps on disk."""

import hashlib
import shutil
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from node.shard_store import Cache, ShardError, ShardStore, ShardUnavailable
from node.sharded_data import ShardedDataset
from protocol.manifest import Manifest, Shard

SEQ = 10


def write_shards(directory, sizes, vocab=50):
    """Shards of these token counts, token i of the stream being i % vocab; the manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    shards, at = [], 0
    for n, size in enumerate(sizes):
        name = f"shard-{n:05d}.bin"
        np.arange(at, at + size, dtype="<u2").__imod__(vocab).tofile(directory / name)
        shards.append(Shard(name, size, hashlib.sha256((directory / name).read_bytes()).hexdigest()))
        at += size
    return Manifest("uint16", vocab, "0" * 64, tuple(shards))


class Provider:
    """A data provider holding every shard: fetch copies one by its hash, counting each."""

    def __init__(self, directory, manifest):
        self.by_hash = {s.sha256: directory / s.name for s in manifest.shards}
        self.sent: list[str] = []

    def __call__(self, sha256, limit, dest):
        if sha256 not in self.by_hash:
            raise LookupError("no peer has it")
        shutil.copyfile(self.by_hash[sha256], dest)
        self.sent.append(dest.name)


@pytest.fixture
def source(tmp_path):
    return tmp_path / "source", write_shards(tmp_path / "source", [1001] * 10)


def cached(tmp_path, source, **cache):
    directory, manifest = source
    provider = Provider(directory, manifest)
    store = ShardStore(tmp_path / "cache", manifest, vocab_size=50, cache=Cache(provider, **cache))
    (tmp_path / "cache").mkdir(exist_ok=True)
    return store, provider


def test_a_batch_is_the_same_for_every_party_holding_the_manifest(tmp_path, source):
    directory, manifest = source
    a = ShardedDataset(ShardStore(directory, manifest, 50), SEQ, batch_seqs=4)
    b = ShardedDataset(cached(tmp_path, source)[0], SEQ, batch_seqs=4)
    for batch_id in (0, 7, 3 * a.batches_per_epoch + 5):
        assert np.array_equal(a.batch(batch_id), b.batch(batch_id))


def test_an_epoch_visits_every_training_sequence_once_and_none_of_the_held_out_tokens(source):
    directory, manifest = source
    data = ShardedDataset(ShardStore(directory, manifest, 50), SEQ, batch_seqs=4, val_fraction=0.15)
    starts = [start for b in range(data.batches_per_epoch) for _, start in data._places(b)]
    assert len(starts) == len(set(starts)) == data.batches_per_epoch * 4
    assert data.val_start == 10010 - 1501 and max(starts) + SEQ + 1 <= data.val_start
    shard_of = np.searchsorted(data.store.starts, starts, side="right") - 1
    assert all(s + SEQ + 1 <= data.store.starts[k + 1] for s, k in zip(starts, shard_of))  # within a shard


def test_a_sequence_is_the_streams_tokens_from_its_start(source):
    directory, manifest = source
    data = ShardedDataset(ShardStore(directory, manifest, 50), SEQ, batch_seqs=4)
    (shard, start), *_ = data._places(3)
    assert data.batch(3)[0].tolist() == [t % 50 for t in range(start, start + SEQ + 1)]


def test_a_rounds_consecutive_batches_need_at_most_two_shards(source):
    directory, manifest = source
    data = ShardedDataset(ShardStore(directory, manifest, 50), SEQ, batch_seqs=4)
    for first in range(0, 2 * data.batches_per_epoch, 4):
        assert len(data.shards_of(range(first, first + 4))) <= 2  # 16 sequences of 100 per shard


def test_validation_sequences_run_on_across_the_last_shards(source):
    directory, manifest = source
    data = ShardedDataset(ShardStore(directory, manifest, 50), SEQ, batch_seqs=4, val_fraction=0.15)
    val = data.val_batches(200)
    assert val.shape == (150, SEQ + 1)
    assert val[0].tolist() == [t % 50 for t in range(data.val_start, data.val_start + SEQ + 1)]


def test_a_node_fetches_only_the_shards_its_batches_need(tmp_path, source):
    store, provider = cached(tmp_path, source)
    data = ShardedDataset(store, SEQ, batch_seqs=4)
    data.batch(0)
    assert sorted(provider.sent) == sorted(manifest_name(store, i) for i in data.shards_of([0]))
    assert store.stats.fetched == len(provider.sent) <= 2


def manifest_name(store, i):
    return store.manifest.shards[i].name


def test_the_cache_deletes_the_least_recently_used_shards_beyond_its_bound(tmp_path, source):
    gone = []
    store, _ = cached(
        tmp_path,
        source,
        max_bytes=3 * 2002,
        on_change=lambda p, h, here: gone.append(p.name) if not here else None,
    )
    for i in (0, 1, 2, 0, 3, 4):
        store.shard(i)
    on_disk = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert on_disk == [manifest_name(store, i) for i in (0, 3, 4)]
    assert gone == [manifest_name(store, 1), manifest_name(store, 2)] and store.stats.evicted == 2


def test_the_validation_shards_stay_cached_whatever_the_bound(tmp_path, source):
    store, _ = cached(tmp_path, source, max_bytes=2002)
    data = ShardedDataset(store, SEQ, batch_seqs=4, val_fraction=0.15)
    data.val_batches(200)  # tokens 8509 to 10009: shards 8 and 9
    for i in range(5):
        store.shard(i)
    assert {8, 9} <= {i for i in range(10) if (tmp_path / "cache" / manifest_name(store, i)).is_file()}


def test_shards_a_previous_process_left_count_against_the_bound(tmp_path, source):
    store, _ = cached(tmp_path, source)
    for i in range(4):
        store.shard(i)
    again, provider = cached(tmp_path, source, max_bytes=2 * 2002)
    again.shard(5)
    assert provider.sent == [manifest_name(again, 5)] and again.cached_bytes <= 2 * 2002


def test_prefetch_fetches_the_next_rounds_shards_in_the_background(tmp_path, source):
    store, provider = cached(tmp_path, source)
    data = ShardedDataset(store, SEQ, batch_seqs=4)
    data.prefetch(range(4, 8))
    deadline = time.monotonic() + 10
    while len(provider.sent) < len(data.shards_of(range(4, 8))) and time.monotonic() < deadline:
        time.sleep(0.01)
    data.batch(5)
    assert sorted(provider.sent) == sorted(manifest_name(store, i) for i in data.shards_of(range(4, 8)))


def test_a_shard_no_provider_sends_is_unavailable_not_a_crash(tmp_path, source):
    directory, manifest = source

    def nobody(sha256, limit, dest):
        raise ConnectionError("no peer answered")

    store = ShardStore(tmp_path / "cache", manifest, 50, Cache(nobody))
    with pytest.raises(ShardUnavailable, match="no data provider sent shard-00003.bin"):
        store.shard(3)
    assert store.stats.unavailable == 1


def test_bytes_that_are_not_the_manifests_shard_are_refused_and_deleted(tmp_path, source):
    directory, manifest = source

    def liar(sha256, limit, dest):
        dest.write_bytes(b"\x01\x00" * 1001)

    store = ShardStore(tmp_path / "cache", manifest, 50, Cache(liar))
    (tmp_path / "cache").mkdir()
    with pytest.raises(ShardUnavailable, match="not the manifest's shard"):
        store.shard(0)
    assert not (tmp_path / "cache" / "shard-00000.bin").exists()


def test_an_altered_shard_in_a_local_directory_is_a_shard_error_and_is_kept(source):
    directory, manifest = source
    (directory / "shard-00002.bin").write_bytes(b"\x00\x00" * 1001)
    with pytest.raises(ShardError, match="shard-00002.bin does not match"):
        ShardStore(directory, manifest, 50).check_all()
    assert (directory / "shard-00002.bin").exists()  # the operator's own file: never deleted


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 300), min_size=1, max_size=8),
    seq=st.integers(1, 20),
    batch_seqs=st.integers(1, 6),
)
def test_every_batch_has_its_full_shape_within_the_training_tokens(tmp_path_factory, sizes, seq, batch_seqs):
    directory = tmp_path_factory.mktemp("shards")
    manifest = write_shards(directory, sizes)
    try:
        data = ShardedDataset(ShardStore(directory, manifest, 50), seq, batch_seqs)
    except ValueError as exc:
        assert "holds no batch" in str(exc)
        return
    for b in (0, data.batches_per_epoch - 1, data.batches_per_epoch):
        assert data.batch(b).shape == (batch_seqs, seq + 1)
        assert all(start + seq + 1 <= data.val_start for _, start in data._places(b))


def test_the_cache_counts_what_it_fetched_deleted_and_missed_in_the_nodes_metrics(tmp_path, source):
    from prometheus_client import generate_latest

    from node.metrics import NodeMetrics, ShardCollector

    store, _ = cached(tmp_path, source, max_bytes=2002)
    for i in (0, 1):
        store.shard(i)
    metrics = NodeMetrics(dict, torch.device("cpu"))
    metrics.registry.register(ShardCollector(store))
    text = generate_latest(metrics.registry).decode()
    assert "eranos_node_shards_fetched_total 2.0" in text
    assert "eranos_node_shards_evicted_total 1.0" in text
    assert "eranos_node_shard_cache_bytes 2002.0" in text
