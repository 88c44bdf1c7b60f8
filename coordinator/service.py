"""The coordinator's I/O shell around the pure state machine.

One loop owns the journal (and so the state): it turns verified gossip into events, steps the
machine for each event and on a timer, and carries out the effects: messages go to the p2p host,
finalized rounds to the chain submitter (its own thread), removals to the log and the metrics.
Payload checks (fetch by hash, strict decode) run on a small thread pool and come back as
events. Joins are checked against the chain first: a key must be an active member of the run
(authorized, or staked) before the machine ever sees it.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from chain.client import EranosClient
from coordinator import membership
from coordinator.journal import Journal
from coordinator.machine import Result
from coordinator.roster import Roster
from coordinator.state import (
    CommitSeen,
    Event,
    HeartbeatSeen,
    JoinRequest,
    Outcome,
    PayloadChecked,
    Phase,
    Publish,
    RecordRound,
    Removed,
    Restarted,
    Seeded,
    State,
    VerdictSeen,
)
from coordinator.submitter import ChainSubmitter
from coordinator.telemetry import Telemetry
from optim.codec import decode, max_payload_bytes
from optim.errors import PayloadError
from optim.spec import ParamSpec
from p2p.errors import BlobError, LocalError
from p2p.host import Host
from p2p.identity import peer_id_of
from p2p.messages import (
    Commit,
    Envelope,
    Heartbeat,
    Join,
    Recheck,
    Reveal,
    RoundEnd,
    RoundStart,
    RunInfo,
    Verdict,
)
from protocol.events import EventLog
from protocol.manifest import files as manifest_files
from protocol.model_config import parameter_shapes
from protocol.run_config import RunConfig, dumps
from protocol.stamps import stamp_error

log = logging.getLogger("eranos.coordinator")
TICK_S = 0.2
RUN_INFO_EVERY_S = 2.0


def param_spec(config: RunConfig) -> ParamSpec:
    """The payload layout every member's optimizer uses, from the run config alone."""
    demo = config.demo_config()
    return ParamSpec.for_config(parameter_shapes(config.model.model_config()), demo)


def initial_state(config: RunConfig) -> State:
    """The machine before any event: the run's rounds, its replay tolerance, its pinned model."""
    return State(config.rounds, exact=config.validation.exact, model_hash=bytes.fromhex(config.model.hash))


def to_event(envelope: Envelope) -> Event | None:
    """The machine's event for a verified message; None for kinds the coordinator only sends."""
    m, key = envelope.body, envelope.sender
    if isinstance(m, Join):
        return JoinRequest(key, tuple(m.addrs))
    if isinstance(m, Heartbeat):
        return HeartbeatSeen(key, m.round, m.model_hash)
    if isinstance(m, Commit):
        return CommitSeen(
            key, m.round, m.payload_hash, m.size, m.model_hash, m.loss, m.state_before, m.state_after
        )
    if isinstance(m, Verdict):
        return VerdictSeen(key, m.round, m.target, m.accept, m.score, m.available, m.evidence, m.loss)
    return None


def starting_weights(journal: Path) -> Path:
    """Where the coordinator keeps the canonical weights of a run's starting model."""
    return journal.with_name(journal.name + ".start-model.bin")


def provide_data(host: Host, config: RunConfig) -> int:
    """Serve the run's manifest, shards and evaluation tasks when they are here; how many files."""
    path = Path(config.data.manifest) if config.data.manifest else None
    served = manifest_files(path) if path is not None and path.is_file() else []
    if config.eval.tasks and Path(config.eval.tasks).is_file():
        served.append(Path(config.eval.tasks))
    for f in served:
        host.provide_file(f)
    return len(served)


class CoordinatorService:
    def __init__(
        self,
        config: RunConfig,
        host: Host,
        journal_path: Path,
        client: EranosClient | None,
        clock: Callable[[], float] = time.time,
        events: EventLog | None = None,
    ) -> None:
        self.config, self.host, self.client, self.clock = config, host, client, clock
        self.journal_path = journal_path
        self.spec = param_spec(config)
        self.max_payload = max_payload_bytes(self.spec)
        self.journal, replayed = Journal.open(
            journal_path, initial_state(config), config.rounds.snapshot_every
        )
        self.submitter = ChainSubmitter(client, config.run.chain_run_id) if client else None
        self.metrics = Telemetry(events or EventLog(None, "coordinator"))
        self._events: queue.Queue[Event] = queue.Queue()
        self._checks = ThreadPoolExecutor(2, thread_name_prefix="payload-check")
        self.roster = (
            Roster(client, config.run.chain_run_id, self._checks, self._post, self._member_keys, clock)
            if client is not None
            else None
        )
        self._served: dict[int, list[bytes]] = {}  # round -> payloads kept for validators and appliers
        self._last_run_info = 0.0
        self._config_text = dumps(config)
        self._replayed_records = [e for e in replayed if isinstance(e, RecordRound)]
        for record in self._replayed_records:
            self.metrics.add_losses(record)
        published = [e.message for e in replayed if isinstance(e, Publish)]
        self._last_round_end = next((m for m in reversed(published) if isinstance(m, RoundEnd)), None)
        self._last_round_start = next((m for m in reversed(published) if isinstance(m, RoundStart)), None)
        current = self.state.round.number if self.state.round is not None else None
        finalize = [m for m in published if isinstance(m, Reveal | Recheck)]
        self._finalize_messages = [m for m in finalize if m.round == current]

    @property
    def state(self):
        return self.journal.state

    def _member_keys(self) -> set[bytes]:
        return set(self.state.members)

    def start(self) -> CoordinatorService:
        self.data_files = provide_data(self.host, self.config)  # nodes fetch the shards from here
        self._provide_starting_model()
        if not self.state.secret:
            self._step(Seeded(os.urandom(32)))
        if self.state.members:
            self._step(Restarted())
        if self.submitter is not None:
            self.submitter.start()
            for record in self._replayed_records:  # the submitter skips what the chain holds
                self.submitter.submit(record)
        return self

    def _provide_starting_model(self) -> None:
        """Serve the weights a run from a Hugging Face directory starts with (written by
        `write_starting_weights`), by their hash, for members that do not hold the directory."""
        if self.config.model.path:
            self.host.provide_file(starting_weights(self.journal_path))

    def close(self) -> None:
        self._checks.shutdown(wait=False, cancel_futures=True)
        if self.submitter is not None:
            self.submitter.close()
        self.journal.close()

    def run(self, stop: threading.Event) -> None:
        """Poll as soon as a message or an event arrives (both set `host.arrived`), and at least
        every TICK_S."""
        while not stop.is_set():
            self.host.arrived.clear()  # before polling: what arrives meanwhile wakes the wait
            self.poll()
            self.host.arrived.wait(TICK_S)

    def _post(self, event: Event) -> None:
        """Queue an event from another thread for the loop, and wake it."""
        self._events.put(event)
        self.host.arrived.set()

    def poll(self) -> None:
        """Everything that arrived, then a tick; called by `run` on each arrival and at least
        every TICK_S."""
        for _ in range(1000):
            try:
                envelope = self.host.received.get_nowait()
            except queue.Empty:
                break
            self._on_envelope(envelope)
        for _ in range(1000):
            try:
                self._step(self._events.get_nowait())
            except queue.Empty:
                break
        self._step(None)
        self._publish_run_info()

    def _on_envelope(self, envelope: Envelope) -> None:
        event = to_event(envelope)
        if event is None:
            return
        if isinstance(event, JoinRequest) and self.roster is not None and not self.roster.admit(event):
            return  # refused, or waiting for the next read of the member table (which emits it)
        # the round a commit is for, before the step: that can move the run past it
        committed_to = self.state.round_numbered(event.round) if isinstance(event, CommitSeen) else None
        result = self._step(event)
        if isinstance(event, JoinRequest) and result.outcome == Outcome.APPLIED:
            self.metrics.joined(event.key, envelope.body.hardware)
        if isinstance(event, CommitSeen) and result.outcome == Outcome.APPLIED:
            self.metrics.member(event.key).utilization = min(1.0, max(0.0, envelope.body.utilization))
            self._checks.submit(self._check_payload, event, committed_to.step, peer_id_of(event.key))

    def _check_payload(self, commit: CommitSeen, step: int, origin: str) -> None:
        """Fetch the committed payload, decode it strictly and check its stamp names the
        committer, the round and its step; a blob nobody serves is not the committer's provable
        fault alone, so it is reported as unavailable (ok None) and the round settles it. What
        was fetched stays served to validators and members until a round after its end."""
        ok = True
        try:
            limit = min(commit.size, self.max_payload)
            peers = [origin, *self.host.peers()]
            data = self.host.fetch(commit.payload_hash, size_limit=limit, peers=peers, keep=True)
            self._served.setdefault(commit.round, []).append(commit.payload_hash)
            if commit.size > self.max_payload or len(data) != commit.size:
                ok = False
            else:
                why = stamp_error(decode(self.spec, data, self.max_payload), commit.key, commit.round, step)
                if why is not None:
                    log.info("payload of %s refused: %s", commit.key.hex()[:8], why)
                ok = why is None
                self.metrics.payload(commit.round, len(data))
        except PayloadError:
            ok = False
        except (BlobError, LocalError) as exc:
            log.info("payload of %s unavailable: %s", commit.key.hex()[:8], exc)
            ok = None
        self._post(PayloadChecked(commit.key, commit.round, ok))

    def _step(self, event: Event | None) -> Result:
        before = self.state
        result = self.journal.step(event, self.clock())
        self.metrics.phase_changed(before, self.state)
        if isinstance(event, JoinRequest) and result.outcome == Outcome.APPLIED:
            self.host.dial_soon(event.addrs[:4])
            self.host.inbox.pin(event.key)  # a member's messages must never become replayable
        if event is not None:
            self.metrics.outcomes[result.outcome.value] += 1
            if result.outcome == Outcome.APPLIED:
                self.metrics.applied(event, self.state)
        for effect in result.effects:
            if isinstance(effect, Publish):
                self._publish(effect.message)
            elif isinstance(effect, RecordRound):
                self._record(effect)
            elif isinstance(effect, Removed):
                self.metrics.removed_member(effect, self.clock())
                log.info("removed %s: %s", effect.key.hex()[:8], effect.reason)
        return result

    def _record(self, record: RecordRound) -> None:
        self.metrics.recorded(record)
        if self.roster is not None:
            self.roster.refresh()  # members that left on chain leave the run before the next round
        # kept one round past its end, for members still fetching what they apply
        for old in [r for r in list(self._served) if r < record.round]:  # the check threads add to it
            for digest in self._served.pop(old):
                self.host.blobs.forget(digest)
        if self.submitter is not None:
            self.submitter.submit(record)
        log.info(
            "round %d: %d accepted, %d penalized",
            record.round,
            len(record.contributed),
            len(record.penalized),
        )

    def _publish(self, message) -> None:
        if isinstance(message, RoundEnd):
            self._last_round_end = message
        elif isinstance(message, RoundStart):
            self._last_round_start = message
        elif isinstance(message, Reveal | Recheck) and message not in self._finalize_messages:
            # overlapped rounds publish the next RoundStart with a Reveal: keep by round, not by start
            kept = [m for m in self._finalize_messages if m.round == message.round]
            self._finalize_messages = [*kept, message]
        try:
            self.host.publish(message)
        except LocalError as exc:
            log.warning("publish of %s failed: %s", type(message).__name__, exc)

    def _publish_run_info(self) -> None:
        now = self.clock()
        if now - self._last_run_info < RUN_INFO_EVERY_S:
            return
        self._last_run_info = now
        s = self.state
        number = s.round.number if s.round is not None else s.next_round
        # A member that missed the last RoundEnd or RoundStart (a crash, a lost gossip message)
        # gets it again with each RunInfo while some member shows it has not acted on it (sent
        # to everyone every time, a RoundStart of 1024 members was most of the coordinator's
        # traffic: scripts/bench_membership.py); members ignore what they already acted on.
        current = s.round.number if s.round is not None else None
        end, start = self._last_round_end, self._last_round_start
        if end is not None and end.round == s.last_finalized and membership.unapplied(s):
            self._publish(end)
        if start is not None and start.round == current and membership.uncommitted(s):
            self._publish(start)
        if s.phase == Phase.FINALIZE:  # who checks whom: a member that missed it cannot vote
            for message in self._finalize_messages:
                self._publish(message)
        self._publish(
            RunInfo(
                config=self._config_text,
                round=number,
                phase=s.phase.value,
                last_finalized=s.last_finalized,
                model_hash=s.model_hash or bytes(32),
                step=s.finalized_rounds,
                members=len(s.members),
                needed=membership.needed(s),
            )
        )
