"""The run config: one TOML file that says everything a run is (model, data, optimizer, rounds,
validation, chain), read by the coordinator and handed to every node it admits.

Every section is a frozen dataclass; `loads` refuses unknown sections and keys (typos), values of
the wrong type and out-of-range values, naming the offending `section.key`.

    [run]        name = "eranos-sim"; chain_run_id = 1; rpc = "http://127.0.0.1:8899"
    [model]      preset = "tiny"; seed = 0
    [data]       corpus = "stdlib"; seq_len = 128; batch_size = 4
    [optim]      chunk = 128; topk = 18; select = "tensor"; beta = 0.99; lr = 1e-3 (at width 128); ...
    [rounds]     min_nodes = 2; rounds = 20; global_batch = 8; round_timeout_s = 60.0; ...
    [validation] exact = true; min_match = 0.95; max_state_drift = 1e-3 (band mode only)
    [chain]      mode = "permissionless"; stake_sol = 0.1; slash_sol = 0.1; points_per_batch = 5; ...
"""

from __future__ import annotations

import json
import math
import tomllib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

from chain.spec import MIN_UNBONDING_SECONDS
from optim.config import PRECONDITIONS, DemoConfig, ValueMode
from optim.local import InnerConfig
from optim.schedule import LrSchedule
from protocol.model_config import PRESETS, ModelConfig, preset


class ConfigError(ValueError):
    """A run config value is missing, unknown or invalid; the message names `section.key`."""


@dataclass(frozen=True)
class RunSection:
    name: str = "eranos"  # the gossip topic and message run id
    chain_run_id: int = 1
    rpc: str = "http://127.0.0.1:8899"

    def check(self) -> None:
        _require(0 < len(self.name) <= 64, "run.name", self.name)
        _require(0 <= self.chain_run_id < 2**64, "run.chain_run_id", self.chain_run_id)
        _require(self.rpc.startswith(("http://", "https://")), "run.rpc", self.rpc)


@dataclass(frozen=True)
class ModelSection:
    preset: str = "tiny"
    seed: int = 0
    # sha256 (hex) of the initial weights, which every member computes from preset and seed. Set,
    # it is the model round 0 starts from; empty, the first members' strict majority decides,
    # which lets early joiners outvote the rest.
    hash: str = ""
    # a local Hugging Face Llama directory to start from (the coordinator's; members without it
    # fetch its weights by `hash` from peers), and the architecture the coordinator read from it
    # (JSON of protocol.model_config.ModelConfig), which replaces `preset` when set
    path: str = ""
    architecture: str = ""

    def model_config(self) -> ModelConfig:
        if not self.architecture:
            return preset(self.preset)
        cfg = ModelConfig(**json.loads(self.architecture))
        cfg.check()
        return cfg

    def check(self) -> None:
        _require(self.preset in PRESETS, "model.preset", self.preset, f"one of {sorted(PRESETS)}")
        try:
            self.model_config()
        except (ValueError, TypeError, ZeroDivisionError) as exc:
            raise ConfigError(f"invalid model.architecture: {exc}") from None
        _require(self.seed >= 0, "model.seed", self.seed)
        valid_hex = len(self.hash) == 64 and all(c in "0123456789abcdef" for c in self.hash)
        _require(self.hash == "" or valid_hex, "model.hash", self.hash, "64 lowercase hex digits or empty")


@dataclass(frozen=True)
class DataSection:
    corpus: str = "stdlib"  # "stdlib", a text file or directory, or a .bin token file
    seq_len: int = 128
    batch_size: int = 4  # sequences per batch id
    # sequences per forward/backward. A replay must sum a gradient in its author's order to
    # reproduce it to the bit, so each commit names the micro batch it was computed with and
    # validators replay with that one. N > 0: every member uses N; 0 ("auto"): each member the
    # largest divisor of batch_size that fits its device's memory (all of it on the CPU).
    micro_batch: int = 4
    # token shards from `eranos prepare-data`: the manifest's path (it replaces corpus) and the
    # sha256 it must have (`Manifest.digest`), so every member trains on the same shards
    manifest: str = ""
    manifest_sha256: str = ""

    def check(self) -> None:
        valid_hex = len(self.manifest_sha256) == 64 and all(
            c in "0123456789abcdef" for c in self.manifest_sha256
        )
        _require(self.manifest_sha256 == "" or valid_hex, "data.manifest_sha256", self.manifest_sha256)
        _require(self.seq_len >= 2, "data.seq_len", self.seq_len)
        _require(self.batch_size >= 1, "data.batch_size", self.batch_size)
        _require(self.micro_batch >= 0, "data.micro_batch", self.micro_batch, "0 (auto) or more")

    def micro_batches_allowed(self) -> range:
        """The micro batches a commit may name: the run's (never more than a batch), or any."""
        if self.micro_batch:
            one = min(self.micro_batch, self.batch_size)
            return range(one, one + 1)
        return range(1, self.batch_size + 1)


@dataclass(frozen=True)
class OptimSection:
    chunk: int = 128
    topk: int = 18
    # "tensor": top-k over each whole tensor, topk per chunk's worth of its entries (busy chunks
    # send more, quiet ones less); "chunk": topk within each chunk (BENCHMARKS.md, #18)
    select: str = "tensor"
    # 1: top-k picks coefficients; t: tiles of t x t of them, topk / t^2 per chunk's worth (#18)
    tile: int = 1
    beta: float = 0.99
    alpha: float = 1.0
    values: str = "sign"
    weight_decay: float = 0.0
    precondition: str = "adam"
    precondition_beta: float = 0.99
    # the sign step's size for a model lr_width wide; a model of width dim steps lr * lr_width / dim.
    # A sign step moves every weight by lr whatever its gradient, so a wider matrix moves its
    # outputs more per step: at 300 steps lr 1e-3 was best at width 128 (tiny) and 3e-4 beat 1e-3
    # at width 320 (20m), 0.935 against 1.129 of AdamW's loss (BENCHMARKS.md, #18).
    # lr_width 0: lr as given. Only for outer_step "sign"; "values" steps scale by lr alone.
    lr: float = 1e-3
    lr_width: int = 128
    # wsd: lr held, then a linear decay to final_ratio * lr over the last decay_fraction of the
    # run's rounds. At 20m over 1000 steps it took DeMo from 1.6% behind AdamW-DDP (constant lr)
    # to ahead, level at 300 steps; at tiny over 300 steps it costs 0.7% (BENCHMARKS.md, #18).
    schedule: str = "wsd"
    decay_fraction: float = 0.2
    final_ratio: float = 0.1
    warmup: int = 0
    outer_step: str = "sign"  # "values": apply the aggregate's values, not its signs (needs values != "sign")
    # local steps (optim/local.py): each round a member takes this many AdamW steps on its batches,
    # dealt round-robin, and sends the change of its weights; 1: one gradient, no inner optimizer
    inner_steps: int = 1
    inner_lr: float = 1e-3  # the inner steps' peak lr, following the schedule's shape

    def inner_config(self) -> InnerConfig | None:
        return InnerConfig(steps=self.inner_steps, lr=self.inner_lr) if self.inner_steps > 1 else None

    def lr_for(self, dim: int) -> float:
        """The peak lr of a model of width dim."""
        if self.lr_width and self.outer_step == "sign":
            return self.lr * self.lr_width / dim
        return self.lr

    def demo_config(self, total_rounds: int, dim: int) -> DemoConfig:
        schedule = LrSchedule(
            self.schedule,
            self.lr_for(dim),
            self.warmup,
            total_rounds,
            final_ratio=self.final_ratio,
            decay_fraction=self.decay_fraction,
        )
        return DemoConfig(
            chunk=self.chunk,
            topk=self.topk,
            select=self.select,
            tile=self.tile,
            beta=self.beta,
            alpha=self.alpha,
            values=ValueMode[self.values.upper()],
            weight_decay=self.weight_decay,
            precondition=self.precondition,
            precondition_beta=self.precondition_beta,
            schedule=schedule,
            outer_step=self.outer_step,
        )

    def check(self) -> None:
        _require(self.values.upper() in ValueMode.__members__, "optim.values", self.values)
        _require(self.precondition in PRECONDITIONS, "optim.precondition", self.precondition)
        try:
            _require(self.lr_width >= 0, "optim.lr_width", self.lr_width, "0 (off) or a width")
            self.demo_config(10**6, max(self.lr_width, 1)).check()
            InnerConfig(steps=self.inner_steps, lr=self.inner_lr).check()
        except ValueError as exc:
            raise ConfigError(f"optim: {exc}") from None


@dataclass(frozen=True)
class RoundsSection:
    min_nodes: int = 2  # the run pauses in WAITING below this many members
    start_nodes: int = 0  # members needed before the first round (0: min_nodes)
    rounds: int = 20
    global_batch: int = 8
    round_timeout_s: float = 60.0
    verdict_timeout_s: float = 30.0
    cooldown_s: float = 10.0
    warmup_timeout_s: float = 120.0
    heartbeat_timeout_s: float = 30.0
    max_misses: int = 2
    max_removals: int = 3  # removed for missed rounds more often than this: banned from the run
    max_unavailable: int = 3  # rounds in a row withheld from checks before a penalty
    validation_rate: float = 0.5  # share of contributions replayed, drawn after commits close
    # share of accepting verdicts replayed again by a member from neither side: below 1, a colluding
    # validator covers for a partner unseen with probability 1 - audit_rate per check
    audit_rate: float = 1.0
    weight_by_throughput: bool = True
    # the next round starts when this one's commits close and trains on the model one round
    # behind while this one is checked and applied (its update lands a round late, as in
    # Psyche); false: each round starts after the last one is applied
    overlap: bool = False
    seed: int = 0
    snapshot_every: int = 50  # the coordinator snapshots its state and starts a new journal this often

    def check(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("validation_rate", "audit_rate"):
                _require(0 <= value <= 1, f"rounds.{f.name}", value, "a fraction in [0, 1]")
            elif f.name in ("seed", "start_nodes"):
                _require(value >= 0, f"rounds.{f.name}", value)
            elif f.name not in ("weight_by_throughput", "overlap"):
                _require(value > 0, f"rounds.{f.name}", value, "positive")


@dataclass(frozen=True)
class ValidationSection:
    # A validator replays the target's round from its committed optimizer state (node/validation.py).
    # exact (the default): members run one kind of hardware, honest replays reproduce the payload
    # and the next state to the bit (BENCHMARKS.md: 240 of 240), so anything else is rejected and
    # two accepts must carry the same replay evidence. exact = false, for mixed hardware, accepts
    # a payload whose replay reproduces at least min_match of its (coefficient, sign) pairs and
    # whose next state is within max_state_drift: that is a poisoning budget, since a member may
    # then flip up to 1 - min_match of its signs every round (5% at 0.95) unpunished.
    exact: bool = True
    min_match: float = 0.95  # band mode only
    max_state_drift: float = 1e-3  # band mode only: relative L2 distance of the claimed next state
    # Exact mode without local steps: a validator checks this many chunks of the target's
    # optimizer state (drawn after commits close) instead of moving all of it (0: all of it).
    # A payload altered in every chunk fails on any one; one whose signs are flipped in a share
    # f of its coefficients escapes with probability (1 - f)^(k * sample_chunks).
    sample_chunks: int = 64

    def accepts(self, match: float, drift: float) -> bool:
        if self.exact:
            return match == 1.0 and drift == 0.0
        return match >= self.min_match and drift <= self.max_state_drift

    def check(self) -> None:
        _require(0 < self.min_match <= 1, "validation.min_match", self.min_match, "0 < min_match <= 1")
        _require(self.max_state_drift >= 0, "validation.max_state_drift", self.max_state_drift)
        _require(self.sample_chunks >= 0, "validation.sample_chunks", self.sample_chunks)


LAMPORTS_PER_SOL = 10**9
CHAIN_MODES = ("permissionless", "permissioned")


@dataclass(frozen=True)
class ChainSection:
    """What `eranos run create` writes on chain: who may join, what they stake, what they earn."""

    mode: str = "permissionless"  # anyone joins by staking; "permissioned": keys the authority authorizes
    stake_sol: float = 0.0  # deposited by each member of a permissionless run when it joins
    slash_sol: float = 0.0  # burned from a member's stake per penalty
    points_per_batch: int = 10  # reward tokens per accepted batch
    points_per_validation: int = 2  # per check nobody contradicted
    unbonding_s: int = MIN_UNBONDING_SECONDS  # a member that leaves withdraws its stake this much later
    token_decimals: int = 0  # of the run's reward token

    @property
    def stake_lamports(self) -> int:
        return round(self.stake_sol * LAMPORTS_PER_SOL)

    @property
    def slash_lamports(self) -> int:
        return round(self.slash_sol * LAMPORTS_PER_SOL)

    def check(self) -> None:
        _require(self.mode in CHAIN_MODES, "chain.mode", self.mode, f"one of {list(CHAIN_MODES)}")
        _require(0 <= self.stake_sol < 1e9, "chain.stake_sol", self.stake_sol, "SOL, >= 0")
        _require(
            0 <= self.slash_sol <= self.stake_sol, "chain.slash_sol", self.slash_sol, "0 <= slash <= stake"
        )
        _require(self.points_per_batch >= 0, "chain.points_per_batch", self.points_per_batch)
        _require(self.points_per_validation >= 0, "chain.points_per_validation", self.points_per_validation)
        _require(
            self.unbonding_s >= MIN_UNBONDING_SECONDS,
            "chain.unbonding_s",
            self.unbonding_s,
            f">= {MIN_UNBONDING_SECONDS}",
        )
        _require(0 <= self.token_decimals <= 9, "chain.token_decimals", self.token_decimals, "0 to 9")


@dataclass(frozen=True)
class CheckpointSection:
    """Hugging Face checkpoints written during the run (node/export.py), in each writer's
    work directory under checkpoints/round-N, and checkpoints/final when the run ends."""

    every_rounds: int = 0  # 0: only the final one
    by: str = "all"  # "all": every node writes them; "first": the accepted member with the lowest key

    def check(self) -> None:
        _require(self.every_rounds >= 0, "checkpoint.every_rounds", self.every_rounds)
        _require(self.by in ("all", "first"), "checkpoint.by", self.by, "'all' or 'first'")


@dataclass(frozen=True)
class EvalSection:
    """Held-out loss on the data's fixed validation split, measured after every `every_rounds`
    rounds (0: never) and kept in the evaluating node's work directory (evals.jsonl)."""

    every_rounds: int = 0
    sequences: int = 64  # validation sequences scored
    # "first": the round's accepted member with the lowest key evaluates (every replica holds the
    # same model, so one score is the run's); "all": every node does, each device idle for it
    by: str = "first"
    # multiple-choice tasks scored by log-likelihood (eranos prepare-eval writes the file); the
    # coordinator serves the file, nodes without it fetch it by tasks_sha256
    tasks: str = ""
    tasks_sha256: str = ""

    def check(self) -> None:
        _require(self.every_rounds >= 0, "eval.every_rounds", self.every_rounds)
        _require(self.sequences >= 1, "eval.sequences", self.sequences)
        _require(self.by in ("all", "first"), "eval.by", self.by, "'all' or 'first'")
        valid_hex = len(self.tasks_sha256) == 64 and all(c in "0123456789abcdef" for c in self.tasks_sha256)
        _require(
            not self.tasks or valid_hex, "eval.tasks_sha256", self.tasks_sha256, "64 lowercase hex digits"
        )


@dataclass(frozen=True)
class RunConfig:
    run: RunSection = field(default_factory=RunSection)
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    rounds: RoundsSection = field(default_factory=RoundsSection)
    validation: ValidationSection = field(default_factory=ValidationSection)
    chain: ChainSection = field(default_factory=ChainSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    eval: EvalSection = field(default_factory=EvalSection)

    def demo_config(self) -> DemoConfig:
        """The optimizer every member runs: [optim] for this model's width over the run's rounds."""
        return self.optim.demo_config(self.rounds.rounds, self.model.model_config().dim)

    def check(self) -> None:
        for f in fields(self):
            getattr(self, f.name).check()


def _require(ok: bool, key: str, value: object, expected: str = "") -> None:
    if not ok:
        raise ConfigError(f"invalid {key} = {value!r}" + (f" (expected {expected})" if expected else ""))


def _typed(key: str, value: object, annotation: object) -> object:
    hint = {"int": int, "float": float, "str": str, "bool": bool}.get(annotation, annotation)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(f"invalid {key} = {value!r} (expected {getattr(hint, '__name__', hint)})")
    if hint is float and not math.isfinite(value):
        raise ConfigError(f"invalid {key} = {value!r} (expected a finite number)")
    if hint is int and not -(2**63) <= value < 2**64:
        raise ConfigError(f"invalid {key} = {value!r} (expected a 64-bit integer)")
    return value


def _section(name: str, cls: type, table: object):
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}] must be a table")
    known = {f.name: f for f in fields(cls)}
    for key in table:
        if key not in known:
            raise ConfigError(f"unknown key {name}.{key} (known: {', '.join(known)})")
    return cls(**{k: _typed(f"{name}.{k}", v, known[k].type) for k, v in table.items()})


def loads(text: str) -> RunConfig:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from None
    sections = {f.name: typing.get_type_hints(RunConfig)[f.name] for f in fields(RunConfig)}
    for name in doc:
        if name not in sections:
            raise ConfigError(f"unknown section [{name}] (known: {', '.join(sections)})")
    config = RunConfig(**{name: _section(name, sections[name], table) for name, table in doc.items()})
    config.check()
    return config


def load(path: str | Path) -> RunConfig:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read run config {path}: {exc}") from None
    return loads(text)


def dumps(config: RunConfig) -> str:
    """The config as TOML (what the coordinator hands to nodes)."""
    lines = []
    for f in fields(config):
        lines.append(f"[{f.name}]")
        section = getattr(config, f.name)
        for sf in fields(section):
            value = getattr(section, sf.name)
            rendered = json.dumps(value)
            lines.append(f"{sf.name} = {rendered}")
        lines.append("")
    return "\n".join(lines)
