"""The node runtime: a member of one run, from joining to applying every round.

The p2p host runs on its own thread; this module's loop handles messages, heartbeats and
joining, and hands the compute (training, validating, applying, syncing) to one worker thread,
in order, so a round's validation always sees the model as it was when the round started and
the apply comes last.

Per round: train the assigned batches, publish a Commit and serve the payload and the optimizer
state before and after it by hash; validate the assigned target (and any Recheck) by replaying
its round from its state; at RoundEnd fetch every accepted payload and apply them in node-id
order, keep the new optimizer state only if this node's payload was accepted (otherwise the
state goes back to where it was, which is what the coordinator expects the next commit to
start from); report the new model hash. A node whose model
is not the round's (a joiner, or one that fell behind) fetches the model by its hash from peers:
the weights file's sha256 is the model hash, so the blob protocol verifies it.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from node import byzantine
from node.checkpoint import model_hash, read_weights, write_weights
from node.data import TokenDataset, default_corpus, text_path_corpus, token_file_corpus
from node.model import Llama
from node.tokenizer import ByteTokenizer
from node.train import Trainer
from node.validation import payload_match, replay, replay_evidence
from optim import DemoOptimizer
from optim.codec import decode, max_payload_bytes
from optim.errors import PayloadError
from optim.state import load_state, reset_state, state_bytes, state_drift, state_size
from p2p.errors import BlobError, LocalError
from p2p.host import Host, peer_id_of
from p2p.messages import (
    FRESH_STATE,
    Commit,
    Heartbeat,
    Join,
    Recheck,
    Reveal,
    RoundEnd,
    RoundStart,
    RunInfo,
    Verdict,
)
from protocol.checks import commitment, verify_reveal
from protocol.model_config import preset
from protocol.run_config import RunConfig
from protocol.stamps import stamp_error

log = logging.getLogger("eranos.node")
CONTROL = (RunInfo, RoundStart, Reveal, Recheck, RoundEnd)  # obeyed from the coordinator only
HEARTBEAT_S = 2.0
JOIN_EVERY_S = 5.0


@dataclass
class RoundWork:
    start: RoundStart
    commits: dict[bytes, Commit] = field(default_factory=dict)
    own_payload: bytes | None = None
    state_before: tuple[bytes, bytes] | None = None  # (state, hash) before this node's compress; None: fresh
    served: list[bytes] = field(default_factory=list)  # blobs this node provides for the round
    to_validate: list[bytes] = field(default_factory=list)
    validated: set[bytes] = field(default_factory=set)
    revealed: bool = False


@dataclass
class Progress:
    """What the live progress line shows."""

    round: int = -1
    phase: str = "starting"
    loss: float | None = None
    payload_bytes: int = 0
    applied: int = -1
    verdicts: int = 0
    synced: int = 0


def build_data(config: RunConfig) -> TokenDataset:
    d = config.data
    if d.corpus == "stdlib":
        corpus = default_corpus(ByteTokenizer())
    elif d.corpus.endswith(".bin"):
        corpus = token_file_corpus(d.corpus)
    else:
        corpus = text_path_corpus(d.corpus, ByteTokenizer())
    return TokenDataset(corpus, d.seq_len, d.batch_size)


class NodeRuntime:
    def __init__(
        self,
        config: RunConfig,
        host: Host,
        coordinator: bytes,
        workdir: Path,
        device: torch.device,
        byzantine_kind: str | None = None,
        micro_batch: int = 4,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config, self.host, self.workdir, self.clock = config, host, workdir, clock
        self.me = host.identity.public_key
        self.coordinator = coordinator  # the run's authority: the only key whose control messages count
        self.refused: Counter[str] = Counter()  # control messages from anyone else, by type
        self.unverified: Counter[str] = Counter()  # coordinator reveals that did not check out
        self.byzantine = byzantine_kind
        self.model = Llama(preset(config.model.preset), seed=config.model.seed).to(device)
        self.optimizer = DemoOptimizer(
            self.model.named_parameters(), config.optim.demo_config(config.rounds.rounds)
        )
        # replays other members' rounds; its state is theirs, loaded for each check
        self.scratch = DemoOptimizer(self.model.named_parameters(), self.optimizer.config)
        self.trainer = Trainer(self.model, build_data(config), micro_batch, device)
        self.max_payload = max_payload_bytes(self.optimizer.spec)
        self.state_size = state_size(self.optimizer)
        self._unresolved: RoundWork | None = None  # a round whose compress awaits its RoundEnd
        self._held: tuple[bytes, bytes] | None = (
            None  # the optimizer's state and its served hash; None: fresh
        )
        self.hash = bytes.fromhex(model_hash(self.model))
        self.applied_round = -1
        self.rounds: dict[int, RoundWork] = {}
        self.early: dict[int, dict[bytes, Commit]] = {}  # commits that overtook their RoundStart
        self.own_history: list[bytes] = []
        self.progress = Progress()
        self.admitted = False
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="train")
        self._pending: list[Future] = []
        self._last_beat = self._last_join = 0.0
        self._provided_weights: bytes | None = None
        self._dialled: set[bytes] = set()
        workdir.mkdir(parents=True, exist_ok=True)

    # --- the loop -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                envelope = self.host.received.get(timeout=0.2)
                self.on_message(envelope.sender, envelope.body)
            except queue.Empty:
                pass
            self._periodic()

    def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)

    def _periodic(self) -> None:
        now = self.clock()
        if not self.admitted and now - self._last_join >= JOIN_EVERY_S:
            self._last_join = now
            self._publish(Join(addrs=self.host.addrs))
        if now - self._last_beat >= HEARTBEAT_S:
            self._last_beat = now
            self._publish(Heartbeat(round=self.applied_round, model_hash=self.hash))
        for future in [f for f in self._pending if f.done()]:
            self._pending.remove(future)
            if future.exception() is not None:
                log.error("work failed: %r", future.exception())

    def _submit(self, fn: Callable, *args) -> None:
        self._pending.append(self._worker.submit(fn, *args))

    def _publish(self, message) -> None:
        try:
            self.host.publish(message)
        except LocalError as exc:
            log.warning("publish of %s failed: %s", type(message).__name__, exc)

    # --- messages -----------------------------------------------------------------------------

    def on_message(self, sender: bytes, m) -> None:
        log.debug("%s from %s", type(m).__name__, sender.hex()[:8])
        if isinstance(m, CONTROL) and sender != self.coordinator:
            self.refused[type(m).__name__] += 1
            log.info("ignored a %s signed by %s, not the coordinator", type(m).__name__, sender.hex()[:8])
            return
        if isinstance(m, RunInfo):
            self._on_run_info(m)
        elif isinstance(m, Join) and sender != self.me:
            self._dial(sender, m.addrs)
        elif isinstance(m, RoundStart):
            self._on_round_start(m)
        elif isinstance(m, Commit):
            self._on_commit(sender, m)
        elif isinstance(m, Reveal):
            self._on_reveal(m)
        elif isinstance(m, Recheck):
            work = self.rounds.get(m.round)
            asked = [t for t, validators in m.assignments.items() if self.me in validators]
            if work is not None and asked:
                work.to_validate.extend(t for t in asked if t not in work.to_validate)
                self._maybe_validate(work)
        elif isinstance(m, RoundEnd):
            work = self.rounds.get(m.round)
            if work is not None:
                if commitment(m.audit_secret) != work.start.audit_commitment:
                    self.unverified["RoundEnd"] += 1
                    log.warning("round %d: the revealed audit secret is not the one committed to", m.round)
                self._submit(self._apply, work, m)

    def _dial(self, key: bytes, addrs: list[str]) -> None:
        """Connect to a member that announced itself, so payloads can be fetched from it directly."""
        if key not in self._dialled and addrs:
            self._dialled.add(key)
            self.host.dial_soon(addrs[:4])

    def _on_run_info(self, info: RunInfo) -> None:
        self.progress.phase = info.phase
        if info.phase == "waiting":
            self.admitted = False  # a restarted or short-handed coordinator may have dropped us
        behind = info.model_hash != bytes(32) and info.model_hash != self.hash
        if behind and info.phase in ("warmup", "waiting") and not self._pending:
            self._submit(self._sync, info.model_hash, info.last_finalized, info.step)

    def _on_round_start(self, rs: RoundStart) -> None:
        if rs.round <= max(self.rounds, default=-1):
            return  # a restarted coordinator's repeat: the round is already under way here
        work = RoundWork(rs)
        self.rounds[rs.round] = work
        for old in [r for r in self.rounds if r < rs.round - 4]:
            del self.rounds[old]
        for sender, c in self.early.pop(rs.round, {}).items():
            if sender in rs.batches:
                work.commits[sender] = c
        self.early = {r: c for r, c in self.early.items() if r > rs.round}
        if self.me not in rs.members:
            self.admitted = False
            return
        self.admitted = True
        self.progress.round = rs.round
        if rs.batches.get(self.me):
            self._submit(self._train, work)

    def _on_reveal(self, reveal: Reveal) -> None:
        """Who checks whom, drawn after commits closed; a draw that does not verify is reported."""
        work = self.rounds.get(reveal.round)
        if work is None or work.revealed:
            return
        work.revealed = True
        rs = work.start
        rate = self.config.rounds.validation_rate
        if not verify_reveal(
            rs.check_commitment, reveal.secret, reveal.commits, rs.members, rate, reveal.validators
        ):
            self.unverified["Reveal"] += 1
            log.warning("round %d: the coordinator's check draw does not verify", reveal.round)
        target = reveal.validators.get(self.me)
        if target is not None and target not in work.to_validate:
            work.to_validate.append(target)
            self._maybe_validate(work)

    def _on_commit(self, sender: bytes, c: Commit) -> None:
        work = self.rounds.get(c.round)
        if work is None:
            newest = max(self.rounds, default=-1)
            if newest < c.round <= newest + 2 and len(self.early.get(c.round, {})) < 4096:
                self.early.setdefault(c.round, {}).setdefault(sender, c)
            return
        if sender not in work.start.batches or sender in work.commits:
            return
        work.commits[sender] = c
        self._maybe_validate(work)

    def _maybe_validate(self, work: RoundWork) -> None:
        for target in work.to_validate:
            if target in work.commits and target not in work.validated:
                work.validated.add(target)
                self._submit(self._validate, work, target)

    # --- work (on the worker thread) ----------------------------------------------------------

    def _fetch(self, c: Commit, origin: bytes) -> bytes:
        peers = [peer_id_of(origin), *self.host.peers()]
        return self.host.fetch(c.payload_hash, size_limit=min(c.size, self.max_payload), peers=peers)

    def _sync(self, target_hash: bytes, applied_round: int, step: int) -> None:
        """Fetch the model with this hash from peers and load it."""
        if target_hash == self.hash:
            return
        path = self.workdir / f"sync-{target_hash.hex()[:16]}.bin"
        try:
            self.host.fetch(target_hash, size_limit=1 << 34, peers=self.host.peers(), dest=path)
            read_weights(self.model, path)
        except (BlobError, LocalError, ValueError) as exc:
            log.warning("cannot fetch model %s yet: %s", target_hash.hex()[:8], exc)
            return
        self.hash, self.applied_round, self.optimizer.step = target_hash, applied_round, step
        self.progress.synced += 1
        self._serve_weights()
        self._publish(Heartbeat(round=self.applied_round, model_hash=self.hash))
        log.info("synced to model %s (round %d)", target_hash.hex()[:8], applied_round)

    def _train(self, work: RoundWork) -> None:
        rs = work.start
        if self.hash != rs.model_hash:
            self._sync(rs.model_hash, rs.round - 1, rs.step)
            if self.hash != rs.model_hash:
                return
        if self._unresolved is not None:  # never learnt whether that payload counted: start afresh
            self._unresolved = None
            self._hold(None)
        self.optimizer.step = rs.step
        batches = list(rs.batches[self.me])
        if self.byzantine == "other-data":
            batches = [b + byzantine.OTHER_DATA_OFFSET for b in batches]
        result = self.trainer.accumulate_gradients(batches)
        work.state_before = self._held
        self._unresolved = work
        payload = self._dishonest(work, self.optimizer.compress(round=rs.round, origin=self.me))
        after = state_bytes(self.optimizer)
        self._held = (after, self.host.provide(after))
        work.own_payload = payload
        self.own_history.append(payload)
        work.served = [self.host.provide(payload)]
        self._publish(
            Commit(
                round=rs.round,
                payload_hash=work.served[0],
                size=len(payload),
                model_hash=rs.model_hash,
                loss=result.loss,
                state_before=FRESH_STATE if work.state_before is None else work.state_before[1],
                state_after=self._held[1],
            )
        )
        self.progress.loss, self.progress.payload_bytes = result.loss, len(payload)

    def _dishonest(self, work: RoundWork, payload: bytes) -> bytes:
        spec, kind = self.optimizer.spec, self.byzantine
        if kind in (None, "other-data", "liar"):
            return payload
        if kind == "flip":
            return byzantine.flip(spec, payload)
        if kind == "noise":
            return byzantine.noise(spec, payload, work.start.seed)
        if kind == "malformed":
            return byzantine.malformed(payload)
        if kind == "stale":
            if len(self.own_history) < byzantine.STALE_ROUNDS:
                return payload
            return byzantine.restamp(
                spec, self.own_history[-byzantine.STALE_ROUNDS], self.optimizer.step, work.start.round
            )
        deadline = min(work.start.deadline - 1, self.clock() + 30)
        while self.clock() < deadline:  # copy: wait for someone else's commit, then take it
            others = [(k, c) for k, c in work.commits.items() if k != self.me]
            if others:
                key, commit = others[0]
                try:
                    return self._fetch(commit, key)
                except (BlobError, LocalError):
                    pass
            time.sleep(0.1)
        return payload

    def _validate(self, work: RoundWork, target: bytes) -> None:
        rs, commit = work.start, work.commits[target]
        if self.hash != rs.model_hash:
            return
        try:
            verdict = self._replay(work, target, commit)
        except (BlobError, LocalError) as exc:  # the target's to serve: reported, never guessed
            log.info("cannot fetch what %s committed: %s", target.hex()[:8], exc)
            verdict = Verdict(rs.round, target, False, 0.0, False, bytes(32), 0.0)
        if self.byzantine == "liar":
            verdict = replace(verdict, accept=False)
        self._publish(verdict)
        self.progress.verdicts += 1

    def _replay(self, work: RoundWork, target: bytes, commit: Commit) -> Verdict:
        """Replay the target's round from its committed state and judge its payload; raises
        BlobError when the target's payload or states cannot be fetched."""
        rs = work.start
        data = self._fetch(commit, target)
        before = (
            None if commit.state_before == FRESH_STATE else self._fetch_state(commit.state_before, target)
        )
        result = self.trainer.accumulate_gradients(list(rs.batches[target]))
        evidence = replay_evidence([p.grad for p in self.model.parameters()], result.loss)
        try:
            sent = decode(self.optimizer.spec, data, self.max_payload)
            why = stamp_error(sent, target, rs.round, rs.step)
            r = replay(self.scratch, before, rs.step) if why is None else None
        except PayloadError as exc:  # StateError included: a state that does not load
            why, r = str(exc), None
        match, drift = 0.0, float("inf")
        if r is not None:
            match = payload_match(sent, r.payload, self.optimizer.spec)
            if hashlib.sha256(r.state_after).digest() == commit.state_after:
                drift = 0.0
            else:
                drift = state_drift(
                    self.scratch, r.state_after, self._fetch_state(commit.state_after, target)
                )
        accept = self.config.validation.accepts(match, drift)
        if not accept:
            log.info("%s failed replay: %s", target.hex()[:8], why or f"match {match:.3f}, drift {drift:.2g}")
        return Verdict(rs.round, target, accept, match, True, evidence, result.loss)

    def _fetch_state(self, digest: bytes, origin: bytes) -> bytes:
        peers = [peer_id_of(origin), *self.host.peers()]
        return self.host.fetch(digest, size_limit=self.state_size, peers=peers)

    def _apply(self, work: RoundWork, end: RoundEnd) -> None:
        self._settle_state(work, end)
        if self.hash != work.start.model_hash:
            return  # not holding this round's starting model: the next sync catches up
        payloads = {}
        for key in end.accepted:
            if key == self.me and work.own_payload is not None:
                payloads[key.hex()] = work.own_payload
                continue
            commit = work.commits.get(key)
            if commit is None:
                log.warning("no commit seen from %s: cannot apply round %d", key.hex()[:8], end.round)
                return
            try:
                payloads[key.hex()] = self._fetch(commit, key)
            except (BlobError, LocalError) as exc:
                log.warning("cannot fetch %s's payload: %s", key.hex()[:8], exc)
                return
        self.optimizer.step = work.start.step
        if payloads:
            try:
                self.optimizer.apply(payloads)
            except PayloadError as exc:
                log.error("round %d not applied: %s", end.round, exc)
                return
        self.hash = self._serve_weights()  # the file's sha256 is the model hash
        self.applied_round = end.round
        self.progress.applied = end.round
        for digest in [*(c.payload_hash for c in work.commits.values()), *work.served]:
            self.host.blobs.forget(digest)
        self._publish(Heartbeat(round=self.applied_round, model_hash=self.hash))

    def _settle_state(self, work: RoundWork, end: RoundEnd) -> None:
        """Keep this round's optimizer state if its payload was accepted, else restore the one
        before it: the state the coordinator expects the next commit to start from."""
        if self._unresolved is not work:
            return
        self._unresolved = None
        if self.me not in end.accepted:
            self._hold(work.state_before)
        elif work.state_before is not None and work.state_before[1] != self._held[1]:
            self.host.blobs.forget(work.state_before[1])

    def _hold(self, state: tuple[bytes, bytes] | None) -> None:
        """Make `state` (bytes and hash; None: fresh) the optimizer's, serving it instead of the
        state held so far."""
        if self._held is not None and (state is None or state[1] != self._held[1]):
            self.host.blobs.forget(self._held[1])
        if state is None:
            reset_state(self.optimizer)
        else:
            load_state(self.optimizer, state[0])
        self._held = state

    def _serve_weights(self) -> bytes:
        """Serve the current model by its hash, for joiners (the previous one is forgotten);
        return that hash."""
        path = self.workdir / "weights.bin"
        tmp = self.workdir / "weights.bin.tmp"
        write_weights(self.model, tmp)
        tmp.replace(path)
        if self._provided_weights is not None:
            self.host.blobs.forget(self._provided_weights)
        self._provided_weights = self.host.provide_file(path)
        return self._provided_weights
