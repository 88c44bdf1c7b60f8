"""A sample of a member's optimizer state is enough to check its round (optim/state_chunks.py,
node.validation.sampled_replay): the chunks sampled reproduce exactly, a dishonest payload fails
on any sample, and a lie in the next state is caught exactly when its leaf is sampled."""

import hashlib
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from node.validation import sampled_replay
from optim import DemoConfig, DemoOptimizer, TensorPayload, decode, encode
from optim.state import StateError, state_bytes
from optim.state_chunks import (
    PAGE,
    drawn_hashes,
    index_bytes,
    leaf_counts,
    load_leaves,
    locate,
    make_index,
    page_hashes,
    read_leaf,
    sample,
)
from scripts import tampering

SHAPES = [("w", (20, 13)), ("b", (11,)), ("conv", (2, 3, 9, 10)), ("m", (16, 24))]
CONFIG = DemoConfig(chunk=8, topk=3, beta=0.9, precondition="adam")
OVER_TENSORS = replace(CONFIG, select="tensor")
OVER_TILES = replace(CONFIG, select="tensor", topk=8, tile=2)  # m: 2 x 2 tiles, b: 1 x 2
WHOLE = [OVER_TENSORS, OVER_TILES]


def optimizer(seed=0, config=CONFIG, shapes=SHAPES):
    torch.manual_seed(seed)
    params = [(n, torch.nn.Parameter(torch.randn(s))) for n, s in shapes]
    return DemoOptimizer(params, config)


def gradients(opt, seed):
    g = torch.Generator().manual_seed(seed)
    for p in opt.params:
        p.grad = torch.randn(p.shape, generator=g)


def trained(rounds=3, seed=0, config=CONFIG):
    """A member after `rounds` compresses: its optimizer and the payload of the last one."""
    opt = optimizer(seed, config)
    for r in range(rounds):
        gradients(opt, 100 + 10 * seed + r)
        opt.step = r
        payload = opt.compress()
    return opt, payload


def fetcher(blobs):
    """fetch(sha256, limit) from what a member serves, checked as the blob protocol does."""

    def fetch(digest, limit):
        data = blobs[digest]
        assert hashlib.sha256(data).digest() == digest and len(data) <= limit
        return data

    return fetch


def scratch_for(member, leaves):
    """A validator's optimizer holding only these leaves of the member's state."""
    root, blobs = index_bytes(member)
    hashes = drawn_hashes(member, root, fetcher(blobs), leaves)
    scratch = optimizer(seed=99)
    load_leaves(scratch, {j: blobs[h] for j, h in hashes.items()})
    return scratch


def test_every_leaf_loaded_is_the_whole_state_again():
    member, _ = trained()
    scratch = scratch_for(member, range(sum(leaf_counts(member))))
    assert state_bytes(scratch) == state_bytes(member)


def member_round(seed=0, config=CONFIG):
    """The member's state before round 3 (root and blobs), the payload it sends, and its next
    state (root and blobs)."""
    member, _ = trained(rounds=3, seed=seed, config=config)
    before = index_bytes(member)
    gradients(member, 7)
    member.step = 3
    payload = member.compress()
    return before, payload, index_bytes(member)


def check(payload, before, after, leaves, config=CONFIG):
    ref = optimizer(config=config)
    hashes = drawn_hashes(ref, before[0], fetcher(before[1]), leaves)
    scratch = optimizer(seed=99, config=config)
    load_leaves(scratch, {j: before[1][h] for j, h in hashes.items()})
    gradients(scratch, 7)
    claimed = drawn_hashes(ref, after[0], fetcher(after[1]), leaves)
    return sampled_replay(scratch, 3, decode(scratch.spec, payload), leaves, claimed)


@pytest.mark.parametrize("config", [CONFIG, OVER_TENSORS, OVER_TILES], ids=["chunk", "tensor", "tiles"])
def test_an_honest_round_reproduces_on_a_sample_of_its_chunks(config):
    before, payload, after = member_round(config=config)
    for leaves in ([0, 5, 9, 17], range(sum(leaf_counts(optimizer(config=config))))):
        result = check(payload, before, after, list(leaves), config)
        assert result.payload_match == 1.0 and result.state_match == 1.0


def sending_leaves(payload, config):
    """The leaves of the chunks a payload that selects over whole tensors sends from."""
    opt = optimizer(config=config)
    decoded, first = decode(opt.spec, payload), 0
    out = []
    for ts, tp, n in zip(opt.spec.tensors, decoded.tensors, leaf_counts(opt)):
        out += sorted({first + int(c) for c in tp.indices[0] // ts.per_chunk})
        first += n
    return out


@pytest.mark.parametrize("config", WHOLE, ids=["tensor", "tiles"])
def test_over_tensors_a_flipped_payload_fails_on_every_sampled_chunk_it_sends_from(config):
    before, payload, after = member_round(config=config)
    bad = tampering.flip(optimizer(config=config).spec, payload)
    for leaf in sending_leaves(payload, config):
        assert check(bad, before, after, [leaf], config).payload_match == 0.0


@pytest.mark.parametrize("config", WHOLE, ids=["tensor", "tiles"])
def test_over_tensors_a_payload_sending_below_its_threshold_fails_where_that_shows(config):
    before, payload, after = member_round(config=config)
    spec = optimizer(config=config).spec
    bad = tampering.noise(spec, payload, 1)  # random positions, random signs
    everything = list(range(sum(leaf_counts(optimizer(config=config)))))
    assert check(bad, before, after, everything, config).payload_match < 0.5


def test_over_tiles_a_lesser_tile_sent_with_its_true_signs_fails_in_its_chunk():
    before, payload, after = member_round(config=OVER_TILES)
    member, _ = trained(rounds=3, config=OVER_TILES)
    gradients(member, 7)
    member.step = 3
    member.compress()  # the member's momentum after round 3: unsent tiles keep their values
    spec, m = member.spec, len(SHAPES) - 1
    sent = decode(spec, payload)
    tp, ts = sent.tensors[m], spec.tensors[m]
    kept = set(tp.indices[0].tolist())
    lesser = next(u for u in range(ts.units) if u not in kept)  # swapped for the last tile sent
    indices = np.array([sorted(kept - {int(tp.indices[0][-1])} | {lesser})])
    at = ts.positions(torch.zeros(1, dtype=torch.long), torch.from_numpy(indices))
    true_signs = torch.sign(member.momentum[m].view(-1)[at]).numpy()
    at_sent = ts.positions(torch.zeros(1, dtype=torch.long), torch.from_numpy(tp.indices))
    true_signs[np.isin(at, at_sent)] = np.sign(tp.values[np.isin(at_sent, at)])  # sent ones: as sent
    tensors = list(sent.tensors)
    tensors[m] = TensorPayload(tp.groups, indices, true_signs)
    bad = encode(spec, 3, tensors)
    leaf = sum(leaf_counts(member)[:m]) + lesser // ts.per_chunk
    assert check(payload, before, after, [leaf], OVER_TILES).payload_match == 1.0
    assert check(bad, before, after, [leaf], OVER_TILES).payload_match == 0.0


@pytest.mark.parametrize("config", WHOLE, ids=["tensor", "tiles"])
def test_over_tensors_a_payload_that_sends_nothing_fails_wherever_there_is_momentum(config):
    before, _, after = member_round(config=config)
    spec = optimizer(config=config).spec
    nothing = [
        TensorPayload(np.zeros(0, np.int64), np.zeros((0, ts.k), np.int64), np.zeros((0, ts.k * ts.width)))
        for ts in spec.tensors
    ]
    empty = encode(spec, 3, nothing)
    for leaf in (0, 5, 9, 17):
        assert check(empty, before, after, [leaf], config).payload_match == 0.0


@pytest.mark.parametrize("kind", ["flip", "noise"])
def test_a_tampered_payload_fails_on_any_single_sampled_chunk(kind):
    before, payload, after = member_round()
    spec = optimizer().spec
    bad = tampering.flip(spec, payload) if kind == "flip" else tampering.noise(spec, payload, 1)
    for leaf in range(sum(leaf_counts(optimizer()))):
        assert check(bad, before, after, [leaf]).payload_match == 0.0


def test_a_payload_from_another_state_fails_its_sampled_chunks():
    before, _, after = member_round()
    other = member_round(seed=1)[1]  # same gradient, another history
    assert check(other, before, after, [0, 5, 9, 17]).payload_match < 0.5


def test_a_lie_in_one_leaf_of_the_next_state_is_caught_exactly_when_that_leaf_is_sampled():
    before, payload, (root, blobs) = member_round()
    ref = optimizer()
    n = sum(leaf_counts(ref))
    hashes = list(drawn_hashes(ref, root, fetcher(blobs), range(n)).values())
    hashes[9] = hashlib.sha256(b"not the leaf").digest()
    lie_root, pages = make_index(ref, hashes)
    lie = (lie_root, {**blobs, **{hashlib.sha256(p).digest(): p for p in pages}})
    assert check(payload, before, lie, [0, 9, 17, 20]).state_match == 0.75
    assert check(payload, before, lie, [0, 5, 17, 20]).state_match == 1.0


def test_a_root_for_another_spec_or_of_the_wrong_size_is_refused():
    member, _ = trained()
    root, _ = index_bytes(member)
    other = optimizer(config=DemoConfig(chunk=8, topk=4, precondition="adam"))
    with pytest.raises(StateError, match="spec"):
        page_hashes(other, root)
    with pytest.raises(StateError, match="bytes"):
        page_hashes(member, root[:-1])


def test_a_page_of_the_wrong_size_is_refused():
    member, _ = trained()
    root, blobs = index_bytes(member)
    (page,) = page_hashes(member, root)
    with pytest.raises(StateError, match="state page 0"):
        drawn_hashes(member, root, lambda digest, limit: blobs[digest][:-32], [3])


def test_a_large_state_is_a_tree_of_pages_and_a_sample_needs_only_the_pages_it_touches():
    member = optimizer(config=DemoConfig(chunk=2, topk=1), shapes=[("w", (64, 80))])  # 1280 leaves
    root, blobs = index_bytes(member)
    asked = []
    fetch = fetcher(blobs)
    hashes = drawn_hashes(member, root, lambda d, limit: asked.append(d) or fetch(d, limit), [3, 7, 1100])
    assert len(page_hashes(member, root)) == 2 == -(-1280 // PAGE)
    assert asked == page_hashes(member, root)  # leaves 3 and 7 share page 0; 1100 is on page 1
    assert [blobs[h] for h in hashes.values()] == [read_leaf(member, j) for j in (3, 7, 1100)]


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda v: v[:-4], "bytes"),
        (lambda v: v[:-4] + np.float32(np.nan).tobytes(), "non-finite"),
        (lambda v: v[:-4] + np.float32(-1.0).tobytes(), "negative second moment"),
    ],
)
def test_a_hostile_leaf_is_refused_and_leaves_the_state_zero(edit, says):
    member, _ = trained()
    scratch = optimizer(seed=99)
    gradients(scratch, 1)
    scratch.compress()
    with pytest.raises(StateError, match=says):
        load_leaves(scratch, {0: read_leaf(member, 0), 3: edit(read_leaf(member, 3))})
    assert not any(t.any() for t in [*scratch.momentum, *scratch.second_moment])


def test_the_sample_is_fixed_by_the_revealed_secret_and_unknown_without_it():
    drawn = sample(b"secret", b"target", 4, n_leaves=1000, count=16)
    assert drawn == sample(b"secret", b"target", 4, n_leaves=1000, count=16)
    assert len(set(drawn)) == 16 and drawn == sorted(drawn) and max(drawn) < 1000
    assert drawn != sample(b"other secret", b"target", 4, n_leaves=1000, count=16)
    assert drawn != sample(b"secret", b"target", 5, n_leaves=1000, count=16)
    assert sample(b"secret", b"target", 4, n_leaves=10, count=16) == list(range(10))


@settings(max_examples=30, deadline=None)
@given(
    shape=st.lists(st.integers(1, 20), min_size=1, max_size=3).map(tuple),
    chunk=st.integers(2, 9),
    adam=st.booleans(),
)
def test_each_leaf_reads_back_as_it_was_loaded_for_any_shape(shape, chunk, adam):
    config = DemoConfig(chunk=chunk, topk=1, precondition="adam" if adam else "none")
    member = optimizer(config=config, shapes=[("t", shape)])
    gradients(member, 3)
    member.compress()
    n = sum(leaf_counts(member))
    scratch = optimizer(seed=1, config=config, shapes=[("t", shape)])
    load_leaves(scratch, {j: read_leaf(member, j) for j in range(n)})
    assert state_bytes(scratch) == state_bytes(member)
    assert all(locate(member, j)[1] == j for j in range(n))
