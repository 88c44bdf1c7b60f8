"""N replicas in one process, exchanging payloads through the real codec: the tool for
convergence experiments and for checking that replicas stay bit-identical.

Each replica has its own model copy, momentum and share of every round's batches. Replica 0
applies every payload as a node does after a round; the others take its weights, which are the
bits they would compute themselves (a step with `check_hashes` has every replica apply and
compares their hashes).
"""

import copy
from dataclasses import dataclass

import torch

from node.checkpoint import model_hash
from node.data import TokenDataset
from node.model import Llama
from node.train import Trainer
from optim import DemoConfig, DemoOptimizer
from optim.local import InnerConfig, LocalSteps
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
        inner: InnerConfig | None = None,
        accumulate: int = 1,  # steps' batches summed into each exchange's one gradient (no inner steps)
    ):
        self.ids = [f"replica-{i}" for i in range(n)]
        self.models = [copy.deepcopy(model) for _ in range(n)]
        self.optimizers = [DemoOptimizer(m.named_parameters(), opt_config) for m in self.models]
        device = next(model.parameters()).device
        self.trainers = [Trainer(m, data, micro_batch, device) for m in self.models]
        self.seed = seed
        self.local = [LocalSteps(m.parameters(), inner) for m in self.models] if inner else []
        self.accumulate = accumulate

    def _share(self, i: int, step: int, global_batch: int) -> list[int]:
        return assign_batches(self.seed + step, self.ids, round_batch_ids(step, global_batch))[self.ids[i]]

    def _shares(self, i: int, round_number: int, global_batch: int, steps: int) -> list[list[int]]:
        """Replica i's share of each step an exchange of `steps` steps covers: r*steps .. r*steps+steps-1."""
        return [self._share(i, round_number * steps + j, global_batch) for j in range(steps)]

    def _train(self, i: int, round_number: int, global_batch: int, inner_lr: float | None) -> list[float]:
        """Replica i's gradients (or pseudo-gradient, with local steps) for the round; its losses."""
        trainer = self.trainers[i]
        if not self.local:
            shares = self._shares(i, round_number, global_batch, self.accumulate)
            return [trainer.accumulate_gradients([b for share in shares for b in share]).loss]
        shares = self._shares(i, round_number, global_batch, self.local[i].config.steps)
        losses: list[float] = []
        self.local[i].run(lambda h: losses.append(trainer.accumulate_gradients(shares[h]).loss), inner_lr)
        return losses

    def step(
        self, round_number: int, global_batch: int, check_hashes: bool = False, inner_lr: float | None = None
    ) -> RoundReport:
        """One exchange. With local steps (`inner`), round r covers steps r*H .. r*H+H-1, each
        replica taking one inner step per step on its share of that step's batches; with
        `accumulate` A, steps r*A .. r*A+A-1, each replica's shares of them in one gradient."""
        payloads, losses = {}, []
        for i, node in enumerate(self.ids):
            losses += self._train(i, round_number, global_batch, inner_lr)
            payloads[node] = self.optimizers[i].compress()
        if check_hashes:
            for opt in self.optimizers:
                opt.apply(payloads)
        else:
            self._apply_once(payloads)
        hashes = tuple(model_hash(m) for m in self.models) if check_hashes else ()
        size = sum(len(p) for p in payloads.values()) // len(payloads)
        return RoundReport(round_number, sum(losses) / len(losses), size, hashes)

    @torch.no_grad()
    def _apply_once(self, payloads: dict[str, bytes]) -> None:
        """Replica 0 applies the round; the others copy its weights and step (an apply is a pure
        function of the weights, the step and the payloads, so this saves N - 1 decodes and steps)."""
        self.optimizers[0].apply(payloads)
        for model, opt in zip(self.models[1:], self.optimizers[1:]):
            for p, q in zip(model.parameters(), self.models[0].parameters()):
                p.copy_(q)
            opt.step += 1
