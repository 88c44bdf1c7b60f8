"""What a node writes after it applies a round: the held-out loss (and the tasks' accuracy) every
`eval.every_rounds`, and Hugging Face checkpoints every `checkpoint.every_rounds`, each by the
round's first accepted member or by every node, as the run config says (`by`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from node.export import export
from node.metrics import NodeMetrics
from node.shard_store import ShardUnavailable
from node.train import Trainer
from p2p.messages import RoundEnd
from protocol.eval_tasks import Task
from protocol.events import EventLog
from protocol.run_config import RunConfig

log = logging.getLogger(__name__)

EVALS = "evals.jsonl"  # held-out loss per evaluated round, one JSON object a line


def chosen(by: str, end: RoundEnd, me: bytes) -> bool:
    """Whether this node does what `by` ("all" or "first") gives to one member of the round."""
    return by == "all" or (bool(end.accepted) and min(end.accepted) == me)


def due(every: int, round: int) -> bool:
    return bool(every) and (round + 1) % every == 0


class RoundOutputs:
    def __init__(
        self,
        config: RunConfig,
        me: bytes,
        model: torch.nn.Module,
        trainer: Trainer,
        tasks: Sequence[Task],
        tokenizer: Path | None,
        workdir: Path,
        events: EventLog,
        metrics: NodeMetrics,
    ) -> None:
        self.config, self.me, self.model, self.trainer = config, me, model, trainer
        self.tasks, self.tokenizer, self.workdir = list(tasks), tokenizer, workdir
        self.events, self.metrics = events, metrics

    def after(self, end: RoundEnd) -> None:
        """Evaluate and write a checkpoint after applying `end`'s round, where they are due here."""
        if due(self.config.eval.every_rounds, end.round) and chosen(self.config.eval.by, end, self.me):
            self.evaluate(end.round)
        checkpoint = self.config.checkpoint
        if due(checkpoint.every_rounds, end.round) and chosen(checkpoint.by, end, self.me):
            export(self.model, self.workdir / "checkpoints" / f"round-{end.round}", end.round, self.tokenizer)

    def evaluate(self, round: int) -> None:
        """Held-out loss (and the tasks' accuracy) of the model as it is after `round`:
        evals.jsonl and /metrics."""
        with self.events.span("eval", round):
            try:
                record = {"round": round, "loss": self.trainer.evaluate(self.config.eval.sequences)}
            except ShardUnavailable as exc:
                log.warning("round %d not evaluated: %s", round, exc)
                return
            if self.tasks:
                record["accuracy"] = self.trainer.choice_accuracy(self.tasks)
                self.metrics.eval_accuracy.set(record["accuracy"])
        self.metrics.eval_loss.set(record["loss"])
        with open(self.workdir / EVALS, "a") as f:
            f.write(json.dumps(record) + "\n")

    def write_final(self, applied: int) -> Path | None:
        """The model as the run left it (after round `applied`), if this node writes checkpoints."""
        if self.config.checkpoint.by == "first" and applied < 0:
            return None
        out = self.workdir / "checkpoints" / "final"
        export(self.model, out, applied, self.tokenizer)
        return out
