"""Local steps in a run: the inner state is part of the committed optimizer state, and a
validator replays a member's inner steps exactly from it, and no other."""

import hashlib

import pytest
import torch

from node.data import TokenDataset, default_corpus
from node.model import Llama, preset
from node.tokenizer import ByteTokenizer
from node.train import Trainer
from node.validation import payload_match, replay, start_replay
from optim import DemoConfig, DemoOptimizer, ValueMode
from optim.codec import decode
from optim.local import InnerConfig, LocalSteps, inner_groups
from optim.state import StateError, is_fresh, load_state, state_bytes, state_size

CFG = DemoConfig(topk=4, beta=0.99, precondition="adam", values=ValueMode.INT8, outer_step="values")
INNER = InnerConfig(steps=3, lr=1e-3)
DATA = TokenDataset(default_corpus(ByteTokenizer()), seq_len=32, batch_seqs=2)


def node(seed_model: Llama | None = None):
    torch.manual_seed(0)
    model = Llama(preset("tiny"))
    if seed_model is not None:
        model.load_state_dict(seed_model.state_dict())
    opt = DemoOptimizer(model.named_parameters(), CFG)
    return model, opt, LocalSteps(model.parameters(), INNER), Trainer(model, DATA, 2, torch.device("cpu"))


def contribute(opt, local, trainer, batches, step, lr=1e-3):
    """One round of a member: its state before, payload and state after."""
    before = state_bytes(opt, local)
    trainer.round_gradients(batches, local, lr)
    opt.step = step
    payload = opt.compress()
    return before, payload, state_bytes(opt, local)


@pytest.fixture(scope="module")
def rounds():
    """A member's three rounds (the last one is checked) and a validator holding the same model."""
    model, opt, local, trainer = node()
    validator = node(model)
    for r in range(3):
        record = contribute(opt, local, trainer, [6 * r, 6 * r + 1, 6 * r + 2, 6 * r + 3], r)
        if r < 2:
            for o in (opt, validator[1]):
                o.step = r
                o.apply({"member": record[1]})
    return validator, record


def test_a_rounds_batches_are_dealt_round_robin_over_the_inner_steps():
    assert inner_groups([1, 2, 3, 4, 5], 2) == [[1, 3, 5], [2, 4]]
    assert inner_groups([7], 4) == [[7]]
    assert inner_groups([], 3) == []


def test_the_committed_state_carries_the_inner_state_and_reads_back():
    _, opt, local, trainer = node()
    assert state_size(opt, local) > state_size(opt) and is_fresh(opt, local)
    _, _, after = contribute(opt, local, trainer, [0, 1], 0)
    _, other_opt, other_local, _ = node()
    load_state(other_opt, after, other_local)
    assert state_bytes(other_opt, other_local) == after
    assert other_local.inner.state[other_local.params[0]]["step"] == 2  # two batches: two inner steps


def test_a_state_without_the_inner_state_is_refused_where_local_steps_run_and_the_reverse():
    _, opt, local, _ = node()
    with pytest.raises(StateError, match="inner state"):
        load_state(opt, state_bytes(opt), local)
    with pytest.raises(StateError, match="inner state"):
        load_state(opt, state_bytes(opt, local))


def test_a_negative_inner_step_is_refused_and_a_negative_first_moment_is_not():
    _, opt, local, trainer = node()
    _, _, after = contribute(opt, local, trainer, [0], 0)
    step_at = state_size(opt)  # the first parameter's inner step comes right after the outer state
    forged = bytearray(after)
    forged[step_at : step_at + 4] = torch.tensor([-1.0]).numpy().astype("<f4").tobytes()
    with pytest.raises(StateError, match="negative"):
        load_state(opt, bytes(forged), local)
    first_moment = step_at + 4
    forged = bytearray(after)
    forged[first_moment : first_moment + 4] = torch.tensor([-0.5]).numpy().astype("<f4").tobytes()
    load_state(opt, bytes(forged), local)


def honest_replay(validator, before):
    model, scratch, scratch_local, trainer = validator
    start_replay(scratch, before, scratch_local)
    trainer.round_gradients([12, 13, 14, 15], scratch_local, 1e-3)
    return replay(scratch, 2, scratch_local)


def test_a_validator_replays_a_members_inner_steps_to_the_same_payload_and_state(rounds):
    validator, (before, payload, after) = rounds
    r = honest_replay(validator, before)
    spec = validator[1].spec
    assert payload_match(decode(spec, payload), r.payload, spec, values=True) == 1.0
    assert r.state_after == hashlib.sha256(after).digest()


@pytest.mark.parametrize("lie", ["other batches", "another inner lr", "a reset inner state"])
def test_a_payload_from_other_inner_steps_than_committed_does_not_replay(rounds, lie):
    validator, (before, _, after) = rounds
    _, scratch, scratch_local, trainer = validator
    batches, lr = ([900, 901, 902, 903], 1e-3) if lie == "other batches" else ([12, 13, 14, 15], 1e-3)
    start_replay(scratch, None if lie == "a reset inner state" else before, scratch_local)
    if lie == "another inner lr":
        lr = 3e-3
    trainer.round_gradients(batches, scratch_local, lr)
    scratch.step = 2
    forged = scratch.compress()
    r = honest_replay(validator, before)
    assert payload_match(decode(scratch.spec, forged), r.payload, scratch.spec, values=True) < 0.9
    # the honest replay is unaffected by what was tried before it
    assert r.state_after == hashlib.sha256(after).digest()
