"""The node's I/O shell: the pure round machine (machine.py) wired to the p2p host and the model.

The loop thread feeds the machine every verified message and a tick, publishes and dials what
it says, and hands its compute jobs to one worker thread, in order, so a round's replays see
the model as it was when the round started and the apply comes last. In overlapped rounds
replays go to a second worker instead, on a replica loaded with the round's own weights
(node/model_versions.py), so they run beside the next round's training. Each job's result
goes back to the machine as one event.

Per round: train the assigned batches, commit, and serve the payload and the optimizer state
before and after it by hash until the round is applied; replay each target the coordinator
names once commits close; at RoundEnd fetch every accepted payload and apply them in node-id
order, keep the new optimizer state only if this node's payload was accepted (otherwise the
state goes back to where it was, which is what the coordinator expects the next commit to start
from: node/contributions.py); report the new model hash. A node whose model is not the
round's fetches the model by its hash from peers: the weights file's sha256 is the model hash,
so the blob protocol verifies it.

Where an operator could cheat (which batches it trains, what it commits, what it reports of a
replay), the runtime asks its `Behaviour`: the honest one here is the only one a node started
from the command line has; the simulator injects others (scripts/adversaries.py).
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import base58
import torch

from node import machine
from node.audit import LoggedRound, log_round
from node.checking import Checker
from node.checkpoint import model_hash, read_weights, starting_model, write_weights
from node.contributions import Contributions
from node.data import TokenDataset
from node.export import RUN_CONFIG
from node.metrics import NodeMetrics, ShardCollector
from node.model_versions import ModelVersions
from node.outputs import RoundOutputs
from node.ranks import Ranks
from node.run_data import build_data, run_tokenizer
from node.shard_store import ShardUnavailable
from node.sharded_data import ShardedDataset
from node.train import Trainer, describe, fits_on, fitting_micro_batch
from optim import DemoOptimizer
from optim.errors import PayloadError
from optim.local import LocalSteps, inner_lr
from p2p.errors import BlobError, LocalError
from p2p.host import Host
from p2p.messages import FRESH_STATE, Commit, RoundStart, Verdict
from protocol.eval_tasks import Task
from protocol.events import EventLog
from protocol.run_config import RunConfig, dumps

if TYPE_CHECKING:
    from node.sharded import Shards  # imported by the node only with --shard (FSDP takes 1.2 s)

log = logging.getLogger("eranos.node")
TICK_S = 0.2  # the longest the loop sleeps with nothing arriving (deadlines are checked on ticks)


@dataclass
class Progress:
    """What the live progress line shows."""

    round: int = -1
    phase: str = "starting"
    members: tuple[int, int] = (0, 0)  # the run's members and how many it needs, as the coordinator says
    loss: float | None = None
    payload_bytes: int = 0
    applied: int = -1
    verdicts: int = 0
    synced: int = 0


class Behaviour:
    """The honest node. Each method is a place where a member could do less, or other, than the
    protocol asks; the simulator's adversaries override them."""

    def batches(self, node: NodeRuntime, start: RoundStart) -> list[int]:
        return list(start.batches[node.me])

    def payload(self, node: NodeRuntime, start: RoundStart, honest: bytes) -> bytes | None:
        """What to commit (None: commit nothing)."""
        return honest

    def verdict(self, node: NodeRuntime, honest: Verdict) -> Verdict | None:
        """What to report of a replay (None: report nothing)."""
        return honest


class NodeRuntime:
    def __init__(
        self,
        config: RunConfig,
        host: Host,
        coordinator: bytes,
        workdir: Path,
        device: torch.device,
        behaviour: Behaviour | None = None,
        clock: Callable[[], float] = time.time,
        data: TokenDataset | ShardedDataset | None = None,
        tasks: Sequence[Task] = (),
        ranks: Ranks | None = None,  # this node's other GPUs (node/ranks.py)
        shards: Shards | None = None,  # the ranks hold the model between them (node/sharded.py)
    ) -> None:
        self.config, self.host, self.workdir, self.clock = config, host, workdir, clock
        self.me = host.identity.public_key
        self.behaviour = behaviour or Behaviour()
        self.model = starting_model(config).to(device)
        compute = shards.device if shards is not None else None  # the optimizer's math
        self.optimizer = DemoOptimizer(self.model.named_parameters(), config.demo_config(), compute)
        inner = config.optim.inner_config()
        self.local = LocalSteps(self.model.parameters(), inner) if inner else None
        # replays other members' rounds; its state is theirs, loaded for each check
        data = data or build_data(config)
        d = config.data
        fits = fits_on(self.model, d.seq_len, device)
        micro_batch = min(d.micro_batch or fitting_micro_batch(d.batch_size, fits), d.batch_size)
        self.trainer = Trainer(self.model, data, micro_batch, device, ranks, shards)
        self.hash = bytes.fromhex(model_hash(self.model))
        overlap = config.rounds.overlap
        # overlapped rounds train and replay one update behind, and replay beside training: on
        # a replica of the model, on a worker of its own
        self._versions = ModelVersions(keep=2 if overlap else 0)
        self._versions.remember(self.model, self.hash)
        checks = Trainer(copy.deepcopy(self.model), data, micro_batch, device) if overlap else self.trainer
        self.checker = Checker(config, host, checks, self._inner_lr, workdir / "checks")
        rate = config.rounds.validation_rate
        self.state = machine.NodeState(
            self.me, coordinator, rate, self.hash, tuple(host.addrs), hardware=describe(device)
        )
        self.progress = Progress()
        self.contributions = Contributions(
            host, self.optimizer, self.local, workdir / "state", self.checker.by_leaf, overlap
        )
        self._results: queue.Queue[machine.Event] = queue.Queue()
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="train")
        self._check_worker = ThreadPoolExecutor(1, thread_name_prefix="check") if overlap else self._worker
        self._provided_weights: bytes | None = None
        self._lingering: list[bytes] = []  # the last applied round's payloads, still served to slower members
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / RUN_CONFIG).write_text(dumps(config))  # what `eranos export` rebuilds the model from
        self.metrics = NodeMetrics(lambda: dict(host.traffic), device)
        if isinstance(data, ShardedDataset):
            self.metrics.registry.register(ShardCollector(data.store))
        self.events = EventLog(workdir / "events.jsonl", f"node-{base58.b58encode(self.me).decode()[:8]}")
        tokenizer = run_tokenizer(config)  # copied into the checkpoints it writes
        self.outputs = RoundOutputs(
            config, self.me, self.model, self.trainer, tasks, tokenizer, workdir, self.events, self.metrics
        )

    # --- the loop -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Step the machine with every message and job result as soon as it arrives (both set
        `host.arrived`), and with a tick at least every TICK_S."""
        while not stop.is_set():
            self.host.arrived.wait(TICK_S)
            self.host.arrived.clear()  # before draining: what arrives meanwhile wakes the next wait
            for _ in range(self.host.received.qsize()):
                envelope = self.host.received.get_nowait()
                self.step(machine.Received(envelope.sender, envelope.body))
            while not self._results.empty():
                self.step(self._results.get_nowait())
            self.step(machine.Tick())

    def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)
        self._check_worker.shutdown(wait=True, cancel_futures=True)
        self.events.close()

    def step(self, event: machine.Event) -> None:
        result = machine.step(self.state, event, self.clock())
        self.state = result.state
        self.progress.phase, self.progress.round = self.state.phase, max(self.state.rounds, default=-1)
        self.progress.members = self.state.members
        for effect in result.effects:
            self._do(effect)

    def _do(self, effect: machine.Effect) -> None:
        if isinstance(effect, machine.Publish):
            self._publish(effect.message)
        elif isinstance(effect, machine.Dial):
            self.host.dial_soon(list(effect.addrs))
        else:
            worker = self._check_worker if isinstance(effect, machine.Validate) else self._worker
            worker.submit(self._job, effect)

    def _job(self, job: machine.Effect) -> None:
        """Run one job on the worker and queue its result; a failure is logged and reported as
        'not done' so the machine never waits on it."""
        handlers = {machine.Train: self._train, machine.Validate: self._validate}
        handlers |= {machine.Apply: self._apply, machine.Sync: self._sync}
        kind, start = type(job).__name__.lower(), time.perf_counter()
        try:
            with self.events.span(kind, _round_of(job)):
                result = handlers[type(job)](job)
            self.metrics.job_seconds.labels(kind).observe(time.perf_counter() - start)
        except Exception:  # a bug in one job must not stop the node
            log.exception("%s failed", type(job).__name__)
            result = _not_done(job)
        self._results.put(result)
        self.host.arrived.set()

    def _publish(self, message) -> None:
        try:
            self.host.publish(message)
        except LocalError as exc:
            log.warning("publish of %s failed: %s", type(message).__name__, exc)

    # --- jobs (on the worker thread) ----------------------------------------------------------

    def _sync(self, job: machine.Sync) -> machine.Synced:
        """Fetch the model with this hash from peers and load it."""
        if job.model_hash != self.hash:
            path = self.workdir / f"sync-{job.model_hash.hex()[:16]}.bin"
            try:
                self.host.fetch(job.model_hash, size_limit=1 << 34, peers=self.host.peers(), dest=path)
                read_weights(self.model, path)
            except (BlobError, LocalError, ValueError) as exc:
                log.warning("cannot fetch model %s yet: %s", job.model_hash.hex()[:8], exc)
                return machine.Synced(None, job.round)
            finally:
                path.unlink(missing_ok=True)  # loaded; the model is served from weights.bin below
            self.hash, self.optimizer.step = job.model_hash, job.step
            self.progress.synced += 1
            self._serve_weights()
            self._versions.remember(self.model, self.hash)
            log.info("synced to model %s (round %d)", job.model_hash.hex()[:8], job.round)
        return machine.Synced(self.hash, job.round)

    def _train(self, job: machine.Train) -> machine.Trained:
        rs = job.start
        if rs.model_hash != self.hash and not self._versions.has(rs.model_hash):
            if self._sync(machine.Sync(rs.model_hash, rs.round - 1, rs.step)).model_hash is None:
                return machine.Trained(rs.round, None)
        self.contributions.start(rs.step)
        self.optimizer.step = rs.step
        self._prefetch_next(rs)
        on_its_model = self._versions.loaded(self.model, self.hash, rs.model_hash)
        with on_its_model, self.events.span("compute", rs.round):  # the swap is not own compute
            started = time.perf_counter()
            batches = self.behaviour.batches(self, rs)
            try:
                result = self.trainer.round_gradients(batches, self.local, self._inner_lr(rs.step))
            except ShardUnavailable as exc:
                log.warning("round %d not trained: %s", rs.round, exc)
                return machine.Trained(rs.round, None)
        self.metrics.computed(time.perf_counter() - started)
        compress_started = time.perf_counter()
        honest = self.optimizer.compress(round=rs.round, origin=self.me)
        compressed = time.perf_counter()
        self.metrics.trained(result.tokens, compressed - started, compressed - compress_started, len(honest))
        try:
            after = self.contributions.compressed()
        except OSError as exc:  # a full disk: this round is not committed, the node goes on
            log.error("round %d not committed: cannot write the optimizer state: %s", rs.round, exc)
            return machine.Trained(rs.round, None)
        payload = self.behaviour.payload(self, rs, honest)
        if payload is None:
            self.contributions.withdraw()
            return machine.Trained(rs.round, None)
        own = self.contributions.add(rs.round, rs.step, payload)
        self.progress.loss, self.progress.payload_bytes = result.loss, len(payload)
        return machine.Trained(
            rs.round,
            Commit(
                round=rs.round,
                payload_hash=own.served[0],
                size=len(payload),
                model_hash=rs.model_hash,
                loss=result.loss,
                state_before=FRESH_STATE if own.state_before is None else own.state_before.digest,
                state_after=after.digest,
                utilization=self.metrics.utilization(),
                micro_batch=self.trainer.micro_batch,
            ),
        )

    def _prefetch_next(self, rs: RoundStart) -> None:
        """Start fetching the data of the next round's fresh batches, which follow this round's."""
        last = max((b for batches in rs.batches.values() for b in batches), default=-1)
        self.trainer.data.prefetch(range(last + 1, last + 1 + self.config.rounds.global_batch))

    def _inner_lr(self, step: int) -> float | None:
        return inner_lr(self.local.config, self.optimizer.config.schedule, step) if self.local else None

    def _validate(self, job: machine.Validate) -> machine.Validated:
        rs, target = job.start, job.target
        with self._checking_model(rs.model_hash) as held:
            if not held:
                return machine.Validated(None)
            try:
                verdict = self.checker.judge(rs, target, job.commit, job.secret)
            except ShardUnavailable as exc:  # this node's data, not the target's fault: no verdict
                log.warning("cannot check %s: %s", target.hex()[:8], exc)
                return machine.Validated(None)
            except (BlobError, LocalError) as exc:  # the target's to serve: reported, never guessed
                log.info("cannot fetch what %s committed: %s", target.hex()[:8], exc)
                verdict = Verdict(rs.round, target, False, 0.0, False, bytes(32), 0.0)
        self.progress.verdicts += 1
        self.metrics.checked(verdict.accept, verdict.available)
        return machine.Validated(self.behaviour.verdict(self, verdict))

    @contextmanager
    def _checking_model(self, wanted: bytes) -> Iterator[bool]:
        """The checker's model with the weights of hash `wanted` for the block (yields whether
        this node has them): the node's own model, or its replica in overlapped rounds."""
        model = self.checker.trainer.model
        if model is self.model:
            with self._versions.loaded(model, self.hash, wanted) as held:
                yield held
        else:
            yield self._versions.load_into(model, wanted)

    def _apply(self, job: machine.Apply) -> machine.Applied:
        rs, end = job.start, job.end
        own = self.contributions.settle(end.round, self.me in end.accepted)
        seen = {k: job.commits[k].payload_hash for k in end.accepted if k in job.commits}
        batches = {k: len(rs.batches.get(k, ())) for k in end.accepted}
        log_round(self.workdir, LoggedRound(end.round, seen, batches, len(seen) == len(end.accepted)))
        if self.hash != end.model_hash:
            return machine.Applied(end.round, None)  # not holding the model it applies to: a sync catches up
        payloads = {}
        for key in end.accepted:
            commit = job.commits.get(key)
            try:
                if own is not None and key == self.me:
                    payloads[key.hex()] = own.payload
                elif commit is None:
                    raise LookupError(f"no commit seen from {key.hex()[:8]}")
                else:
                    payloads[key.hex()] = self.checker.fetch_payload(commit, key)
            except (BlobError, LocalError, LookupError) as exc:
                log.warning("cannot apply round %d: %s", end.round, exc)
                return machine.Applied(end.round, None)
        self.optimizer.step = rs.step
        if payloads:
            try:
                self.optimizer.apply(payloads)
            except PayloadError as exc:
                log.error("round %d not applied: %s", end.round, exc)
                return machine.Applied(end.round, None)
        self.hash = self._serve_weights()  # the file's sha256 is the model hash
        self._versions.remember(self.model, self.hash)
        self.progress.applied = end.round
        self.metrics.applied_round.set(end.round)
        self.outputs.after(end)
        served = own.served if own is not None else []
        for digest in self._lingering:  # the round before: every member has applied it by now
            self.host.blobs.forget(digest)
        dropped, self.contributions.dropped = self.contributions.dropped, []
        self._lingering = [*(c.payload_hash for c in job.commits.values()), *served, *dropped]
        return machine.Applied(end.round, self.hash)

    def _serve_weights(self) -> bytes:
        """Serve the current model by its hash, for joiners (the previous one is forgotten);
        return that hash."""
        path = self.workdir / "weights.bin"
        tmp = self.workdir / "weights.bin.tmp"
        digest = write_weights(self.model, tmp)
        tmp.replace(path)
        if self._provided_weights is not None:
            self.host.blobs.forget(self._provided_weights)
        self._provided_weights = self.host.blobs.add_file(path, digest)
        return self._provided_weights


def _round_of(job: machine.Effect) -> int:
    if isinstance(job, machine.Train | machine.Validate):
        return job.start.round
    return job.end.round if isinstance(job, machine.Apply) else job.round


def _not_done(job: machine.Effect) -> machine.Event:
    if isinstance(job, machine.Train):
        return machine.Trained(job.start.round, None)
    if isinstance(job, machine.Validate):
        return machine.Validated(None)
    if isinstance(job, machine.Apply):
        return machine.Applied(job.end.round, None)
    return machine.Synced(None, job.round)
