"""The blob store: a digest provided several times is served until each provider is done."""

import hashlib

from p2p.blobs import BlobStore


def test_a_blob_provided_twice_is_served_until_forgotten_twice():
    store = BlobStore()
    digest = store.add_bytes(b"payload")
    store.add_bytes(b"payload")
    store.forget(digest)
    assert store.read_all(digest) == b"payload"
    store.forget(digest)
    assert not store.has(digest)


def test_forgetting_a_blob_never_provided_changes_nothing():
    store = BlobStore()
    digest = store.add_bytes(b"x")
    store.forget(digest)
    store.forget(digest)
    assert not store.has(digest)
    store.add_bytes(b"x")
    assert store.has(digest)


def test_a_leaf_two_state_files_share_is_served_from_the_file_that_stays(tmp_path):
    store, first, second = BlobStore(), tmp_path / "first", tmp_path / "second"
    first.write_bytes(b"aaLEAF")
    second.write_bytes(b"LEAFbbbb")
    digest = b"\x01" * 32
    store.add_range(first, 2, 4, digest)
    store.add_range(second, 0, 4, digest)
    store.forget(digest, second)
    second.unlink()
    assert store.read_all(digest) == b"LEAF"
    store.forget(digest, first)
    assert not store.has(digest)


def test_a_file_is_served_by_its_sha256_or_by_the_digest_its_writer_computed(tmp_path):
    store, path = BlobStore(), tmp_path / "weights.bin"
    path.write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").digest()
    assert store.add_file(path) == digest
    assert store.add_file(path, digest) == digest
    store.forget(digest)
    assert store.read_all(digest) == b"weights"
