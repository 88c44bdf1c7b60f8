"""The sign-agreement score separates an honest payload from each dishonest kind."""

import copy

import numpy as np
import pytest
import torch

from node.data import TokenDataset, default_corpus
from node.model import Llama, preset
from node.tokenizer import ByteTokenizer
from node.train import Trainer
from node.validation import sign_agreement
from optim import DemoConfig, DemoOptimizer
from optim.codec import Payload, TensorPayload, decode, encode

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
    flipped = encode(opt.spec, p.step, [TensorPayload(t.chunks, t.indices, -t.values) for t in p.tensors])
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
                TensorPayload(t.chunks, t.indices, rng.choice([-1.0, 1.0], size=t.values.shape))
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
    assert (s.coefficients, s.accept(0.5, 1.0)) == (0, False)
