"""The coordinator's part of a run config: membership, timeouts, validation, length."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class RoundConfig:
    run: str = "agora"
    min_nodes: int = 2
    rounds: int = 20  # the run finishes after this many finalized rounds
    global_batch: int = 8  # batches trained per round across all members
    round_timeout_s: float = 60.0  # training deadline: commits after it are not waited for
    verdict_timeout_s: float = 30.0  # validation and tie-breaks after the training deadline
    cooldown_s: float = 10.0  # at most this long for members to apply and report their hash
    warmup_timeout_s: float = 120.0  # joiners must hold the current model within this
    heartbeat_timeout_s: float = 30.0
    max_misses: int = 2  # consecutive rounds without a commit before a member is removed
    validation_rate: float = 0.5  # fraction of contributions re-examined each round
    weight_by_throughput: bool = True
    seed: int = 0

    def check(self) -> None:
        """Raise ValueError naming the first field with an invalid value."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "run":
                ok = isinstance(value, str) and 0 < len(value) <= 64
            elif f.name == "weight_by_throughput":
                ok = isinstance(value, bool)
            elif f.name == "validation_rate":
                ok = isinstance(value, (int, float)) and 0 <= value <= 1
            elif f.name == "seed":
                ok = isinstance(value, int) and value >= 0
            elif f.type in ("int", int):
                ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
            else:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
            if not ok:
                raise ValueError(f"round config: invalid {f.name} = {value!r}")
