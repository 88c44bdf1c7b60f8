"""The optimizer state a node serves for replay: exact bytes, strict loading, through files."""

import hashlib
import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from optim import DemoConfig, DemoOptimizer, state
from optim.state import (
    HEADER,
    StateError,
    is_fresh,
    load_state,
    reset_state,
    state_bytes,
    state_drift,
    state_size,
    write_state,
)


def optimizer(precondition="adam", seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.Linear(8, 4))
    return DemoOptimizer(model.named_parameters(), DemoConfig(chunk=4, topk=2, precondition=precondition))


def trained(seed=0):
    opt = optimizer(seed=seed)
    for p in opt.params:
        p.grad = torch.randn_like(p)
    opt.compress()
    return opt


def test_a_fresh_optimizer_holds_the_all_zero_state():
    opt = optimizer()
    assert is_fresh(opt) and not is_fresh(trained())


def test_the_state_size_is_the_header_and_every_tensor_in_fp32():
    # 172 weights (16x8 + 8 + 8x4 + 4), every shape a whole number of chunks: 172 momentum
    # coefficients and, with Adam preconditioning, 172 second moments
    assert state_size(optimizer()) == HEADER + 4 * (172 + 172) == 1413
    assert state_size(optimizer(precondition="none")) == HEADER + 4 * 172
    assert len(state_bytes(optimizer())) == 1413


def test_loading_a_state_reproduces_its_bytes():
    source, target = trained(0), optimizer(seed=1)
    load_state(target, state_bytes(source))
    assert state_bytes(target) == state_bytes(source)


def test_reset_returns_to_the_fresh_state():
    opt = trained()
    reset_state(opt)
    assert is_fresh(opt)


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda b: b[:-4], "bytes, expected"),
        (lambda b: b + b"\0" * 4, "bytes, expected"),
        (lambda b: b"XXXX" + b[4:], "known version"),
        (lambda b: b[:5] + bytes(32) + b[37:], "another parameter spec"),
        (lambda b: b[:HEADER] + struct.pack("<f", float("nan")) + b[HEADER + 4 :], "non-finite"),
        (lambda b: b[:-4] + struct.pack("<f", -1.0), "negative second moment"),  # the last value is one
    ],
)
def test_a_bad_state_is_refused_and_leaves_the_optimizer_unchanged(mutate, reason):
    opt, before = trained(), None
    before = state_bytes(opt)
    with pytest.raises(StateError, match=reason):
        load_state(opt, mutate(state_bytes(trained(seed=1))))
    assert state_bytes(opt) == before


def test_a_state_from_an_optimizer_without_adam_does_not_fit_one_with_it():
    with pytest.raises(StateError):
        load_state(optimizer(), state_bytes(optimizer(precondition="none")))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_load_as_anything_but_a_state_error(data):
    opt = optimizer()
    try:
        load_state(opt, data)
    except StateError:
        assert is_fresh(opt)


def test_state_drift_is_zero_for_identical_states_and_relative_otherwise():
    opt = trained()
    a = state_bytes(opt)
    for t in opt.momentum:
        t.mul_(1.5)
    for t in opt.second_moment:
        t.mul_(1.5)
    scaled = state_bytes(opt)
    assert state_drift(opt, scaled) == 0.0
    assert state_drift(opt, a) == pytest.approx(1 / 3, rel=1e-6)  # |a - 1.5a| / |1.5a|


def test_a_state_goes_through_a_file_in_slices_smaller_than_its_tensors(monkeypatch, tmp_path):
    monkeypatch.setattr(state, "SLICE", 7)  # every tensor here is cut, most not evenly
    source, target = trained(0), optimizer(seed=1)
    path = tmp_path / "state"
    with open(path, "wb") as f:
        digest = write_state(source, f)
    assert path.read_bytes() == state_bytes(source) and digest == hashlib.sha256(path.read_bytes()).digest()
    with open(path, "rb") as f:
        load_state(target, f)
        assert state_drift(target, f) == 0.0
    assert state_bytes(target) == state_bytes(source)
