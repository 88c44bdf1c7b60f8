"""Replay reproduces an honest contribution exactly and no dishonest one; the sign-agreement
baseline separates them only once momentum has settled."""

import copy
import hashlib

import numpy as np
import pytest
import torch

from node.data import TokenDataset, default_corpus
from node.model import Llama, preset
from node.tokenizer import ByteTokenizer
from node.train import Trainer
from node.validation import payload_match, replay, sign_agreement, start_replay
from optim import DemoConfig, DemoOptimizer
from optim.codec import Payload, TensorPayload, decode, encode
from optim.config import ValueMode
from optim.spec import ParamSpec
from optim.state import state_bytes
from scripts import tampering

ROUNDS = 30


@pytest.fixture(scope="module")
def settled():
    """Two honest nodes after ROUNDS rounds, and a validator's copy of the shared model."""
    torch.manual_seed(0)
    data = TokenDataset(default_corpus(ByteTokenizer()), seq_len=64, batch_seqs=2)
    cfg = DemoConfig(topk=4, beta=0.99)
    models = [Llama(preset("tiny")) for _ in range(2)]
    opts = [DemoOptimizer(m.named_parameters(), cfg) for m in models]
    trainers = [Trainer(m, data, 2, torch.device("cpu")) for m in models]
    history = []
    for r in range(ROUNDS):
        payloads = {}
        for i, (t, o) in enumerate(zip(trainers, opts)):
            o.zero_grad()
            t.accumulate_gradients([4 * r + i])
            payloads[f"n{i}"] = o.compress()
        history.append(payloads)
        if r < ROUNDS - 1:
            for o in opts:
                o.apply(payloads)
    validator = Trainer(copy.deepcopy(models[0]), data, 2, torch.device("cpu"))
    return opts[0], validator, history


def score(opt, validator, payload_bytes, batch):
    validator.model.zero_grad()
    validator.accumulate_gradients(batch)
    grads = [p.grad for p in validator.model.parameters()]
    return sign_agreement(decode(opt.spec, payload_bytes), grads, opt.spec).agreement


def test_an_honest_payload_agrees_with_the_recomputed_gradient(settled):
    opt, validator, history = settled
    assert score(opt, validator, history[-1]["n0"], [4 * (ROUNDS - 1)]) > 0.75


def test_a_sign_flipped_payload_disagrees(settled):
    opt, validator, history = settled
    p = decode(opt.spec, history[-1]["n0"])
    flipped = encode(opt.spec, p.step, [TensorPayload(t.groups, t.indices, -t.values) for t in p.tensors])
    assert score(opt, validator, flipped, [4 * (ROUNDS - 1)]) < 0.25


@pytest.mark.parametrize("kind", ["copy", "other data", "stale", "random"])
def test_dishonest_payloads_score_near_chance(settled, kind):
    opt, validator, history = settled
    own_batch = [4 * (ROUNDS - 1)]
    if kind == "copy":
        payload = history[-1]["n1"]  # the other node's payload, claimed as n0's
    elif kind == "other data":
        payload, own_batch = history[-1]["n0"], [10_000]
    elif kind == "stale":
        p = decode(opt.spec, history[-6]["n0"])
        payload = encode(opt.spec, ROUNDS - 1, p.tensors)
    else:
        p = decode(opt.spec, history[-1]["n0"])
        rng = np.random.default_rng(0)
        payload = encode(
            opt.spec,
            p.step,
            [
                TensorPayload(t.groups, t.indices, rng.choice([-1.0, 1.0], size=t.values.shape))
                for t in p.tensors
            ],
        )
    assert score(opt, validator, payload, own_batch) < 0.7


def test_an_empty_payload_scores_zero_coefficients():
    spec = DemoOptimizer(Llama(preset("tiny")).named_parameters(), DemoConfig()).spec
    empty = Payload(
        0,
        [
            TensorPayload(np.zeros(0, np.int64), np.zeros((0, t.k), np.int64), np.zeros((0, t.k)))
            for t in spec.tensors
        ],
    )
    s = sign_agreement(empty, [None] * len(spec.tensors), spec)
    assert (s.coefficients, s.agreement) == (0, 0.0)


REPLAY_ROUNDS = 6


@pytest.fixture(scope="module", params=["chunk", "tensor"])
def recorded(request):
    """Two honest nodes and one training on other data (its payloads never applied), with every
    round's payload and optimizer state before and after, and a validator's model and scratch
    optimizer that follow the shared model; top-k within chunks, then over whole tensors."""
    torch.manual_seed(0)
    data = TokenDataset(default_corpus(ByteTokenizer()), seq_len=64, batch_seqs=2)
    cfg = DemoConfig(topk=4, beta=0.99, precondition="adam", select=request.param)
    models = [Llama(preset("tiny")) for _ in range(4)]
    for m in models[1:]:
        m.load_state_dict(models[0].state_dict())
    opts = [DemoOptimizer(m.named_parameters(), cfg) for m in models]
    trainers = [Trainer(m, data, 2, torch.device("cpu")) for m in models]
    history = []
    for r in range(REPLAY_ROUNDS):
        record = {}
        for i, name in enumerate(["n0", "n1", "other"]):
            trainers[i].accumulate_gradients([10_000 + r] if name == "other" else [4 * r + i])
            opts[i].step = r
            before = state_bytes(opts[i])
            payload = opts[i].compress()
            record[name] = (payload, before, state_bytes(opts[i]))
        history.append(record)
        if r < REPLAY_ROUNDS - 1:
            for o in opts:
                o.apply({"n0": record["n0"][0], "n1": record["n1"][0]})
    # the validator's model is models[3]: it applied the same payloads
    return DemoOptimizer(models[3].named_parameters(), cfg), trainers[3], history


def replayed(recorded, round_, target_batch, state_before):
    scratch, validator, history = recorded
    assert round_ == REPLAY_ROUNDS - 1  # the validator holds the last round's model
    start_replay(scratch, state_before)
    validator.accumulate_gradients([target_batch])
    return replay(scratch, round_)


def test_an_honest_round_replays_to_the_same_payload_and_state(recorded):
    scratch, _, history = recorded
    r = REPLAY_ROUNDS - 1
    payload, before, after = history[r]["n0"]
    out = replayed(recorded, r, 4 * r, before)
    assert payload_match(decode(scratch.spec, payload), out.payload, scratch.spec) == 1.0
    assert out.state_after == hashlib.sha256(after).digest()


@pytest.mark.parametrize("kind", ["other-data", "copy", "flip", "stale", "noise"])
def test_a_dishonest_round_does_not_replay(recorded, kind):
    scratch, _, history = recorded
    r = REPLAY_ROUNDS - 1
    payload, before, after = history[r]["n0"]
    if kind == "other-data":
        payload, before, after = history[r]["other"]
    elif kind == "copy":
        payload = history[r]["n1"][0]
    elif kind == "flip":
        payload = tampering.flip(scratch.spec, payload)
    elif kind == "stale":
        payload = tampering.restamp(scratch.spec, history[r - 3]["n0"][0], r, r)
    else:
        payload = tampering.noise(scratch.spec, payload, seed=0)
    out = replayed(recorded, r, 4 * r, before)
    assert payload_match(decode(scratch.spec, payload), out.payload, scratch.spec) < 0.8
    assert kind != "other-data" or out.state_after != hashlib.sha256(after).digest()


def test_payload_match_counts_coefficient_and_sign_pairs_over_the_larger_payload():
    spec = DemoOptimizer(
        torch.nn.Linear(4, 4, bias=False).named_parameters(), DemoConfig(chunk=4, topk=2)
    ).spec

    def payload(indices, signs):
        chunks = np.arange(len(indices), dtype=np.int64)
        return Payload(0, [TensorPayload(chunks, np.array(indices, np.int64), np.array(signs, float))])

    sent = payload([[1, 2]], [[1.0, -1.0]])
    assert payload_match(sent, sent, spec) == 1.0
    assert payload_match(sent, payload([[1, 3]], [[1.0, -1.0]]), spec) == 0.5  # index 2 differs
    assert payload_match(sent, payload([[1, 2]], [[1.0, 1.0]]), spec) == 0.5  # a sign differs
    assert payload_match(sent, payload([], []), spec) == 0.0  # nothing sent where the replay sends


def test_in_value_modes_the_match_compares_values_not_only_signs():
    spec = ParamSpec.build([("w", (8, 8))], chunk=8, topk=2, mode=ValueMode.RAW)
    honest = Payload(0, [TensorPayload(np.array([0]), np.array([[1, 5]]), np.array([[0.5, -0.25]]))])
    scaled = Payload(0, [TensorPayload(np.array([0]), np.array([[1, 5]]), np.array([[9.0, -0.25]]))])
    assert payload_match(scaled, honest, spec) == 1.0  # same signs
    assert payload_match(scaled, honest, spec, values=True) == 0.5
