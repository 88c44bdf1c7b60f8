"""A small node round shared by tests/test_ranks.py and the torchrun ranks it starts
(tests/rank_worker.py): the same model, data and optimizer in every process."""

import numpy as np
import torch

from node.data import Corpus, TokenDataset
from node.model import Llama, preset
from optim import DemoConfig, DemoOptimizer, ValueMode
from optim.local import InnerConfig, LocalSteps
from optim.state import state_bytes
from protocol.eval_tasks import Task

MICRO_BATCH = 2
TASKS = [
    Task(tuple(range(i, i + 5)), tuple(tuple(range(c, c + 1 + i % 3)) for c in (3, 9, 27)), i % 3)
    for i in range(7)
]
CONFIG = DemoConfig(topk=4, beta=0.99, precondition="adam", values=ValueMode.INT8, outer_step="values")


def make_round(seed: int = 0, tied: bool = False):
    """(model, data, optimizer, local steps); the model's weights drawn from `seed`; `tied`: one
    matrix for the embedding and the head."""
    torch.manual_seed(seed)
    model = Llama(preset("tiny", n_layers=2, vocab_size=64, max_seq_len=16, tie_embeddings=tied))
    tokens = np.random.default_rng(0).integers(0, 64, 4000).astype(np.uint16)
    data = TokenDataset(Corpus(tokens, "synthetic", "synthetic"), seq_len=16, batch_seqs=3)
    optimizer = DemoOptimizer(model.named_parameters(), CONFIG)
    return model, data, optimizer, LocalSteps(model.parameters(), InnerConfig(steps=2, lr=1e-3))


def round_outputs(trainer, optimizer, local) -> dict:
    """A round of 5 batches (one gradient), then one of 4 batches in 2 local steps: what each
    hands the optimizer, the payloads and the states after them; then an evaluation."""
    plain = trainer.accumulate_gradients([0, 1, 2, 3, 4])
    grads = [p.grad.clone() for p in trainer.model.parameters()]
    payload = optimizer.compress()
    stepped = trainer.round_gradients([5, 6, 7, 8], local, lr=1e-3)
    optimizer.step = 1
    return {
        "loss": plain.loss,
        "grads": grads,
        "payload": payload,
        "local_loss": stepped.loss,
        "local_payload": optimizer.compress(),
        "state": state_bytes(optimizer, local),
        "eval_loss": trainer.evaluate(5),
        "accuracy": trainer.choice_accuracy(TASKS),
    }
