"""Replaying another member's round: what a validator fetches of a target (its payload, and its
optimizer state, whole or a sample of its chunks: node/committed_state.py) and the verdict it
reaches. Raises BlobError when the target does not serve what it committed (its fault) and
ShardUnavailable when this node lacks the data of the target's batches (nobody's)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

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
        self,
        config: RunConfig,
        host,
        trainer: Trainer,
        inner_lr: Callable[[int], float | None],
        directory: Path,  # where a target's whole state is fetched to, for one check at a time
    ) -> None:
        self.config, self.host, self.trainer, self.inner_lr = config, host, trainer, inner_lr
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        committed_state.clear_orphans(directory)
        model = trainer.model
        # replays other members' rounds on the node's model: its state is theirs, loaded per check
        compute = trainer.shards.device if trainer.shards is not None else None
        self.scratch = DemoOptimizer(model.named_parameters(), config.demo_config(), compute)
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
            return self._replay(rs, target, commit, secret, why)
        finally:
            self.trainer.micro_batch = own

    def fetch_payload(self, c: Commit, origin: bytes) -> bytes:
        peers = [peer_id_of(origin), *self.host.peers()]
        limit = min(c.size, self.max_payload)
        return self.host.fetch(
            c.payload_hash, size_limit=limit, peers=peers, keep=True
        )  # re-served to others

    def _replay(
        self, rs: RoundStart, target: bytes, commit: Commit, secret: bytes, why: str | None
    ) -> Verdict:
        """Load the target's committed state (whole, or the chunks the round's secret draws),
        recompute its gradient, and compare its payload and next state with the replay's."""
        data = self.fetch_payload(commit, target)
        peers = [peer_id_of(target), *self.host.peers()]

        def fetch(digest: bytes, limit: int, dest: Path | None = None) -> bytes | Path:
            return self.host.fetch(digest, size_limit=limit, peers=peers, dest=dest)

        drawn = self._drawn(secret, target, rs.round) if self.by_leaf else []
        try:
            self._load_before(commit, fetch, drawn)
        except StateError as exc:
            why = why or str(exc)
        result = self.trainer.round_gradients(
            list(rs.batches[target]), self.scratch_local, self.inner_lr(rs.step)
        )
        evidence = replay_evidence([p.grad for p in self.trainer.model.parameters()], result.loss)
        match, drift = 0.0, float("inf")
        try:
            sent = decode(self.scratch.spec, data, self.max_payload)
            why = why or stamp_error(sent, target, rs.round, rs.step)
            if why is None:
                match, drift = self._compare(rs, sent, commit, fetch, drawn)
        except PayloadError as exc:  # StateError is one
            why = str(exc)
        accept = self.config.validation.accepts(match, drift)
        if not accept:
            log.info("%s failed replay: %s", target.hex()[:8], why or f"match {match:.3f}, drift {drift:.2g}")
        return Verdict(rs.round, target, accept, match, True, evidence, result.loss)

    def _drawn(self, secret: bytes, target: bytes, round: int) -> list[int]:
        n = sum(state_chunks.leaf_counts(self.scratch))
        return state_chunks.sample(secret, target, round, n, self.config.validation.sample_chunks)

    def _load_before(self, commit: Commit, fetch, drawn: list[int]) -> None:
        """The state the target's compress started from, into the scratch optimizer (the drawn
        leaves only when sampling; the rest zero); StateError when it is not a state."""
        fresh = commit.state_before == FRESH_STATE
        if not self.by_leaf and fresh:
            start_replay(self.scratch, None, self.scratch_local)
            return
        if not self.by_leaf:
            with self._fetched(fetch, commit.state_before) as f:
                start_replay(self.scratch, f, self.scratch_local)
            return
        before = {}
        if not fresh:
            hashes = committed_state.fetch_sample(fetch, self.scratch, commit.state_before, drawn)
            before = committed_state.fetch_leaves(fetch, self.scratch, hashes)
        state_chunks.load_leaves(self.scratch, before)

    def _compare(self, rs: RoundStart, sent, commit: Commit, fetch, drawn: list[int]) -> tuple[float, float]:
        """(payload match, next-state drift) of the target's commit against the replay's: over the
        whole state, or over the drawn chunks (drift 0 when every drawn leaf is the replay's)."""
        if self.by_leaf:
            after = committed_state.fetch_sample(fetch, self.scratch, commit.state_after, drawn)
            check = sampled_replay(self.scratch, rs.step, sent, drawn, after)
            return check.payload_match, 0.0 if check.state_match == 1.0 else float("inf")
        r = replay(self.scratch, rs.step, self.scratch_local)
        match = payload_match(sent, r.payload, self.scratch.spec, values=self.config.validation.exact)
        if r.state_after == commit.state_after:
            return match, 0.0
        with self._fetched(fetch, commit.state_after) as claimed:
            return match, state_drift(self.scratch, claimed, self.scratch_local)

    @contextmanager
    def _fetched(self, fetch, digest: bytes) -> Iterator:
        """A target's whole state, fetched to a file (open for reading) that goes when done."""
        path = committed_state.state_file(self.directory, "target")
        try:
            fetch(digest, self.state_size, path)
            with open(path, "rb") as f:
                yield f
        finally:
            path.unlink(missing_ok=True)
