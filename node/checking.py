"""Replaying another member's round: what a validator fetches of a target (its payload, and its
optimizer state, whole or a sample of its chunks: node/committed_state.py) and the verdict it
reaches. Raises BlobError when the target does not serve what it committed (its fault) and
ShardUnavailable when this node lacks the data of the target's batches (nobody's)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

from node import committed_state
from node.train import Trainer
from node.validation import payload_match, replay, replay_evidence, sampled_replay, start_replay
from optim import DemoOptimizer, state_chunks
from optim.codec import decode, max_payload_bytes
from optim.errors import PayloadError
from optim.local import LocalSteps
from optim.state import StateError, state_drift, state_size
from p2p.identity import peer_id_of
from p2p.messages import FRESH_STATE, Commit, RoundStart, Verdict
from protocol.run_config import RunConfig
from protocol.stamps import stamp_error

log = logging.getLogger("eranos.node")


class Checker:
    def __init__(
        self, config: RunConfig, host, trainer: Trainer, inner_lr: Callable[[int], float | None]
    ) -> None:
        self.config, self.host, self.trainer, self.inner_lr = config, host, trainer, inner_lr
        model = trainer.model
        # replays other members' rounds on the node's model: its state is theirs, loaded per check
        self.scratch = DemoOptimizer(model.named_parameters(), config.optim.demo_config(config.rounds.rounds))
        inner = config.optim.inner_config()
        self.scratch_local = LocalSteps(model.parameters(), inner) if inner else None
        self.max_payload = max_payload_bytes(self.scratch.spec)
        self.state_size = state_size(self.scratch, self.scratch_local)
        self.by_leaf = committed_state.sampled(config)

    def judge(self, rs: RoundStart, target: bytes, commit: Commit, secret: bytes) -> Verdict:
        """Replay the target's round, with the micro batch its commit names, and judge what it
        committed."""
        why, own = None, self.trainer.micro_batch
        if commit.micro_batch in self.config.data.micro_batches_allowed():
            self.trainer.micro_batch = commit.micro_batch
        else:
            why = f"micro batch {commit.micro_batch} is not one this run allows"
        try:
            if self.by_leaf:
                return self._sampled(rs, target, commit, secret, why)
            return self._whole(rs, target, commit, why)
        finally:
            self.trainer.micro_batch = own

    def fetch_payload(self, c: Commit, origin: bytes) -> bytes:
        peers = [peer_id_of(origin), *self.host.peers()]
        limit = min(c.size, self.max_payload)
        return self.host.fetch(
            c.payload_hash, size_limit=limit, peers=peers, keep=True
        )  # re-served to others

    def _fetch_state(self, digest: bytes, origin: bytes) -> bytes:
        peers = [peer_id_of(origin), *self.host.peers()]
        return self.host.fetch(digest, size_limit=self.state_size, peers=peers)

    def _whole(self, rs: RoundStart, target: bytes, commit: Commit, why: str | None) -> Verdict:
        """Replay the target's round from its committed state and judge its payload; raises
        BlobError when the target's payload or states cannot be fetched."""
        data = self.fetch_payload(commit, target)
        fresh = commit.state_before == FRESH_STATE
        before = None if fresh else self._fetch_state(commit.state_before, target)
        r = None
        try:
            start_replay(self.scratch, before, self.scratch_local)
        except StateError as exc:
            why = why or str(exc)
        batches = list(rs.batches[target])
        result = self.trainer.round_gradients(batches, self.scratch_local, self.inner_lr(rs.step))
        evidence = replay_evidence([p.grad for p in self.trainer.model.parameters()], result.loss)
        try:
            sent = decode(self.scratch.spec, data, self.max_payload)
            why = why or stamp_error(sent, target, rs.round, rs.step)
            r = replay(self.scratch, rs.step, self.scratch_local) if why is None else None
        except PayloadError as exc:
            why = str(exc)
        match, drift = 0.0, float("inf")
        if r is not None:
            match = payload_match(sent, r.payload, self.scratch.spec, values=self.config.validation.exact)
            if hashlib.sha256(r.state_after).digest() == commit.state_after:
                drift = 0.0
            else:
                claimed = self._fetch_state(commit.state_after, target)
                drift = state_drift(self.scratch, r.state_after, claimed, self.scratch_local)
        accept = self.config.validation.accepts(match, drift)
        if not accept:
            log.info("%s failed replay: %s", target.hex()[:8], why or f"match {match:.3f}, drift {drift:.2g}")
        return Verdict(rs.round, target, accept, match, True, evidence, result.loss)

    def _sampled(
        self, rs: RoundStart, target: bytes, commit: Commit, secret: bytes, why: str | None
    ) -> Verdict:
        """Replay the target's round on the chunks of its state the round's secret draws, and
        judge its payload and next state there; raises BlobError when the target's payload,
        index or leaves cannot be fetched."""
        data = self.fetch_payload(commit, target)
        peers = [peer_id_of(target), *self.host.peers()]

        def fetch(digest: bytes, limit: int) -> bytes:
            return self.host.fetch(digest, size_limit=limit, peers=peers)

        n = sum(state_chunks.leaf_counts(self.scratch))
        drawn = state_chunks.sample(secret, target, rs.round, n, self.config.validation.sample_chunks)
        check = None
        try:
            before = {}
            if commit.state_before != FRESH_STATE:
                hashes = committed_state.fetch_sample(fetch, self.scratch, commit.state_before, drawn)
                before = committed_state.fetch_leaves(fetch, self.scratch, hashes)
            state_chunks.load_leaves(self.scratch, before)
        except StateError as exc:
            why = why or str(exc)
        result = self.trainer.round_gradients(list(rs.batches[target]))
        evidence = replay_evidence([p.grad for p in self.trainer.model.parameters()], result.loss)
        try:
            sent = decode(self.scratch.spec, data, self.max_payload)
            why = why or stamp_error(sent, target, rs.round, rs.step)
            if why is None:
                after = committed_state.fetch_sample(fetch, self.scratch, commit.state_after, drawn)
                check = sampled_replay(self.scratch, rs.step, sent, drawn, after)
        except PayloadError as exc:  # StateError is one
            why = str(exc)
        match = check.payload_match if check is not None else 0.0
        drift = 0.0 if check is not None and check.state_match == 1.0 else float("inf")
        accept = self.config.validation.accepts(match, drift)
        if not accept:
            found = why or f"chunks {match:.3f}, states {check.state_match:.3f}"
            log.info("%s failed sampled replay: %s", target.hex()[:8], found)
        return Verdict(rs.round, target, accept, match, True, evidence, result.loss)
