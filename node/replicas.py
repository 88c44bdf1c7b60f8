"""N replicas in one process, exchanging payloads through the real codec: the tool for
convergence experiments and for checking that replicas stay bit-identical.

Each replica has its own model copy, momentum and share of every round's batches; every
replica applies every payload, exactly as nodes do after a round.
"""

import copy
from dataclasses import dataclass

from node.checkpoint import model_hash
from node.data import TokenDataset
from node.model import Llama
from node.train import Trainer
from optim import DemoConfig, DemoOptimizer
from protocol.assignment import assign_batches, round_batch_ids


@dataclass(frozen=True)
class RoundReport:
    round: int
    loss: float  # mean training loss over all replicas' batches
    payload_bytes: int  # mean payload size per replica
    hashes: tuple[str, ...]  # each replica's model hash after the step (empty unless checked)


class ReplicaRunner:
    def __init__(
        self,
        model: Llama,
        data: TokenDataset,
        opt_config: DemoConfig,
        n: int,
        micro_batch: int,
        seed: int = 0,
    ):
        self.ids = [f"replica-{i}" for i in range(n)]
        self.models = [copy.deepcopy(model) for _ in range(n)]
        self.optimizers = [DemoOptimizer(m.named_parameters(), opt_config) for m in self.models]
        device = next(model.parameters()).device
        self.trainers = [Trainer(m, data, micro_batch, device) for m in self.models]
        self.seed = seed

    def step(self, round_number: int, global_batch: int, check_hashes: bool = False) -> RoundReport:
        batches = assign_batches(
            self.seed + round_number, self.ids, round_batch_ids(round_number, global_batch)
        )
        payloads, losses = {}, []
        for node, trainer, opt in zip(self.ids, self.trainers, self.optimizers):
            losses.append(trainer.accumulate_gradients(batches[node]).loss)
            payloads[node] = opt.compress()
        for opt in self.optimizers:
            opt.apply(payloads)
        hashes = tuple(model_hash(m) for m in self.models) if check_hashes else ()
        size = sum(len(p) for p in payloads.values()) // len(payloads)
        return RoundReport(round_number, sum(losses) / len(losses), size, hashes)
