"""The optimizer state a member serves each round (node/committed_state.py) is exactly the Merkle
index of its leaves (optim/state_chunks.py), whatever order its writer threads finish in."""

import errno
import hashlib

import pytest
import torch

from node import committed_state
from optim import DemoConfig, DemoOptimizer
from optim.state_chunks import index_bytes
from p2p.blobs import BlobStore

# more tensors than writer threads, so the writer's bound on tensors in flight is exercised
SHAPES = [(f"t{i}", (3 + 5 * i, 7 + i)) for i in range(committed_state.IO_THREADS + 5)]


def trained_optimizer() -> DemoOptimizer:
    torch.manual_seed(0)
    params = [(n, torch.nn.Parameter(torch.randn(s))) for n, s in SHAPES]
    opt = DemoOptimizer(params, DemoConfig(chunk=8, topk=3, beta=0.9, precondition="adam"))
    for r in range(2):
        for p in opt.params:
            p.grad = torch.randn(p.shape)
        opt.step = r
        opt.compress()
    return opt


def test_a_served_state_is_the_index_of_its_leaves_byte_for_byte(tmp_path):
    opt = trained_optimizer()
    blobs = BlobStore()
    held = committed_state.serve(blobs, opt, None, tmp_path, by_leaf=True)
    root, expected = index_bytes(opt)
    assert held.digest == hashlib.sha256(root).digest()
    leaves = held.served[-len(held.spans) :]
    assert all(blobs.read_all(h) == expected[h] for h in held.served[1:])
    assert [length for _, length in held.spans] == [len(expected[h]) for h in leaves]
    assert held.path.stat().st_size == sum(len(expected[h]) for h in leaves)


def test_a_forgotten_state_is_no_longer_served_and_its_file_is_gone(tmp_path):
    opt = trained_optimizer()
    blobs = BlobStore()
    held = committed_state.serve(blobs, opt, None, tmp_path, by_leaf=True)
    committed_state.forget(blobs, held)
    assert not any(blobs.has(h) for h in held.served)
    assert not held.path.exists()


def test_a_state_that_cannot_be_written_leaves_no_file_and_nothing_served(tmp_path, monkeypatch):
    opt = trained_optimizer()
    blobs = BlobStore()
    calls, write_and_hash = [], committed_state._write_and_hash

    def disk_full(fd, leaves, at):  # the third tensor's write finds the disk full
        calls.append(at)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_and_hash(fd, leaves, at)

    monkeypatch.setattr(committed_state, "_write_and_hash", disk_full)
    with pytest.raises(OSError, match="No space"):
        committed_state.serve(blobs, opt, None, tmp_path, by_leaf=True)
    assert list(tmp_path.iterdir()) == []
    assert not blobs.has(hashlib.sha256(index_bytes(opt)[0]).digest())
