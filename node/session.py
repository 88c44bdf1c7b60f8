"""One `eranos node run`: reach the coordinator, learn its run, check this machine can take
part, register on chain, train, and stop when the run finishes.

Everything a person can get wrong is caught before any stake is deposited and reported in one
line: a coordinator serving another run than `--run`, a data file this machine lacks, a device it
lacks. Waits say what they wait for, once, and again at most once a minute.
"""

from __future__ import annotations

import argparse
import queue
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import NoReturn

import base58
import torch
from rich.console import Console
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from chain.client import EranosClient
from chain.errors import ProgramError, RpcUnavailable
from chain.state import MemberStatus
from node import ranks
from node.data import TokenDataset
from node.model import Llama
from node.run_data import (
    build_data,
    eval_tasks,
    fetch_eval_tasks,
    fetch_manifest,
    fetch_tokenizer,
    shard_fetcher,
)
from node.runtime import Behaviour, NodeRuntime, Progress
from node.shard_store import Cache
from node.sharded_data import ShardedDataset
from node.train import Trainer, pick_device, use_deterministic_kernels
from p2p.errors import BlobError, LocalError, PeerUnreachable
from p2p.host import Host
from p2p.identity import Identity, peer_id_of
from p2p.messages import RunInfo
from protocol.console import process_started
from protocol.eval_tasks import Task
from protocol.manifest import TOKENIZER
from protocol.manifest import files as manifest_files
from protocol.run_config import ConfigError, RunConfig, dumps, loads
from protocol.usage import USAGE, write_usage

RETRY_S = 5.0
REPEAT_S = 60.0  # a wait that goes on is reported again this often, not at every retry
FIND_RUN_S = 15.0  # how long the coordinator's gossip subscriptions may take to arrive


def say(message: str) -> None:
    print(f"eranos node: {message}", file=sys.stderr, flush=True)


def fail(message: str) -> NoReturn:
    raise SystemExit(f"eranos node: {message}")


class Reporter:
    """A waiting line said once, then at most every REPEAT_S while the wait goes on."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock, self.last, self.count = clock, float("-inf"), 0

    def __call__(self, message: str) -> None:
        self.count += 1
        if self.clock() - self.last >= REPEAT_S:
            self.last = self.clock()
            say(message if self.count == 1 else f"{message} ({self.count} attempts so far)")


class Session:
    def __init__(
        self, args: argparse.Namespace, keypair: Keypair, workdir: Path, stop: threading.Event
    ) -> None:
        self.args, self.keypair, self.workdir, self.stop = args, keypair, workdir, stop
        self.address, self.coordinator = args.coordinator
        self.peer = peer_id_of(self.coordinator)
        self.stages: list[tuple[str, float, float]] = []  # start-up: (stage, start, end)
        self.tasks: list[Task] = []  # the run's multiple-choice evaluation tasks
        self.ranks: ranks.Ranks | None = None  # this node's GPUs when torchrun started it
        self._since = process_started()

    def stage(self, name: str) -> None:
        """The start-up stage `name` ended now (written to the event log once there is one)."""
        now = time.time()
        self.stages.append((f"start-up: {name}", self._since, now))
        self._since = now

    def run(self, behaviour: Behaviour | None = None) -> None:
        try:
            device = pick_device(self.args.device)
        except ValueError as exc:
            fail(str(exc))
        self.ranks = ranks.from_environment(device)
        if self.args.shard and self.ranks is None:
            fail(ranks.shard_refusal(None, None))
        if self.ranks is not None:
            device = self.ranks.device
            if self.ranks.rank > 0:
                follow(self.args, self.ranks)
                return
            held = "the model sharded between them" if self.args.shard else "each holding the model"
            say(f"{self.ranks.world} ranks, {held}")
        self.stage("imports")
        identity = Identity.from_seed(bytes(self.keypair)[:32])
        try:
            host = Host(
                identity, self.args.run, listen=self.args.listen, pinned=[self.coordinator],
                relays=[self.coordinator], announce=self.args.announce or (),
            ).start()  # fmt: skip
        except LocalError as exc:
            fail(f"{exc}; pick another port with --listen /ip4/0.0.0.0/tcp/PORT")
        runtime, config = None, None
        self.stage("p2p host")
        try:
            say(f"{identity.address} reachable at {', '.join(host.addrs)}")
            config = self.join_run(host)
            if self.ranks is not None:
                ranks.share(None if config is None else dumps(config), self.ranks)
            if config is None:
                return
            use_deterministic_kernels()
            shards = None
            if self.args.shard:  # the master weights and optimizer stay on the host
                from node.sharded import Shards  # only here: importing FSDP takes a second

                model_config, checkpointing = config.model.model_config(), self.args.activation_checkpointing
                shards = Shards(model_config, self.ranks, checkpointing)
                device = torch.device("cpu")
            runtime = NodeRuntime(
                config,
                host,
                self.coordinator,
                self.workdir,
                device,
                behaviour,
                data=self.data,
                tasks=self.tasks,
                ranks=self.ranks,
                shards=shards,
            )
            runtime.model.activation_checkpointing = self.args.activation_checkpointing
            self.stage("model")
            for name, start, end in self.stages:
                runtime.events.write(name, -1, start, end - start)
            self.serve_metrics(runtime)
            worker = threading.Thread(target=runtime.run, args=(self.stop,), name="node", daemon=True)
            worker.start()
            show_progress(runtime.progress, self.stop)
            self.stop.set()
            worker.join(10)
            if runtime.progress.phase == "finished":
                final = runtime.outputs.write_final(runtime.progress.applied)
                if final is not None:
                    say(f"final checkpoint (Hugging Face format) in {final}")
        finally:
            self.stop.set()
            if runtime is not None:
                runtime.close()
            if self.ranks is not None and config is not None:
                ranks.stop(self.ranks)
            write_usage(self.workdir / USAGE, host.traffic, host.messages)
            host.close()

    def serve_metrics(self, runtime: NodeRuntime) -> None:
        """Prometheus /metrics where --metrics says; a port in use costs the metrics, not the node."""
        if self.args.metrics == "off":
            return
        host, _, port = self.args.metrics.rpartition(":")
        try:
            say(f"metrics at http://{host}:{runtime.metrics.serve(host, int(port))}/metrics")
        except (OSError, ValueError) as exc:
            say(f"no metrics served on {self.args.metrics!r}: {exc}")

    def join_run(self, host: Host) -> RunConfig | None:
        """Connect, take the coordinator's run, check its config here, register on chain."""
        if not self.connect(host):
            return None
        self.stage("reach coordinator")
        self.find_run(host)
        config = self.wait_for_config(host)
        if config is None:
            return None
        if self.args.shard and (why := ranks.shard_refusal(config, self.ranks)):
            fail(why)
        self.stage("run config")
        cache = None
        if config.data.manifest and not Path(config.data.manifest).exists():
            config, cache = self.fetch_data(host, config)
        self.data = load_data(config, cache)
        if config.data.manifest and cache is None:  # a member holding the shards serves them too
            for f in manifest_files(Path(config.data.manifest)):
                host.provide_file(f)
        config = self.load_tasks(host, config)
        self.stage("data")
        if not self.args.no_chain:
            authority = Pubkey.from_bytes(self.coordinator)
            client = EranosClient.connect(self.args.rpc or config.run.rpc, self.keypair, authority=authority)
            register(client, config.run.chain_run_id, self.coordinator, self.stop)
            self.stage("chain join")
        return config

    def fetch_data(self, host: Host, config: RunConfig) -> tuple[RunConfig, Cache]:
        """The run's manifest from the coordinator (and peers), and the cache its shards are
        fetched into as the rounds need them, each served on to other members while here."""
        directory = self.args.data_cache / config.data.manifest_sha256[:16]
        say(f"fetching the run's data manifest; shards go to {directory} as rounds need them")
        try:
            config = fetch_manifest(host, [self.peer, *host.peers()], config, directory)
        except (BlobError, LocalError, ValueError) as exc:
            fail(f"cannot fetch the run's data: {exc}")
        host.provide_file(Path(config.data.manifest))
        try:
            fetch_tokenizer(host, [self.peer, *host.peers()], config)
            host.provide_file(Path(config.data.manifest).parent / TOKENIZER)
        except (BlobError, LocalError) as exc:
            say(f"the run's tokenizer was not fetched, checkpoints will lack it: {exc}")

        def served(path: Path, sha256: str, here: bool) -> None:
            if here:  # the store has checked its hash: not hashed again here
                host.blobs.add_fetched(bytes.fromhex(sha256), path)
            else:
                host.blobs.forget(bytes.fromhex(sha256))

        fetch = shard_fetcher(host, lambda: [self.peer, *host.peers()])
        return config, Cache(fetch, int(self.args.data_cache_gb * (1 << 30)), served)

    def load_tasks(self, host: Host, config: RunConfig) -> RunConfig:
        """The run's evaluation tasks, fetched when not here and served on to later joiners."""
        try:
            cache = self.args.data_cache / "eval"
            config = fetch_eval_tasks(host, [self.peer, *host.peers()], config, cache)
            self.tasks = eval_tasks(config)
        except (BlobError, LocalError, OSError, ValueError) as exc:
            fail(f"cannot use the run's evaluation tasks: {exc}")
        if self.tasks:
            host.provide_file(Path(config.eval.tasks))
        return config

    def connect(self, host: Host) -> bool:
        report = Reporter()
        while not self.stop.is_set():
            try:
                host.connect(self.address, timeout=10)
                return True
            except (PeerUnreachable, LocalError):
                report(f"cannot reach the coordinator at {self.address}; retrying every {RETRY_S:.0f} s")
                self.stop.wait(RETRY_S)
        return False

    def find_run(self, host: Host) -> None:
        """The run the coordinator serves, from its gossip subscriptions: taken when --run is not
        given, and refused in one line when --run names another."""
        deadline = time.monotonic() + FIND_RUN_S
        runs = []
        while not runs and time.monotonic() < deadline and not self.stop.is_set():
            runs = host.runs_of(self.peer)
            self.stop.wait(0.2)
        wanted = self.args.run
        if wanted is not None and runs and wanted not in runs:
            served = ", ".join(repr(r) for r in runs)
            fail(f"the coordinator serves run {served}, not {wanted!r}: fix --run or leave it out")
        if wanted is None:
            if len(runs) != 1:
                fail(f"cannot tell which run the coordinator serves ({runs}); pass --run NAME")
            host.join_run(runs[0])

    def wait_for_config(self, host: Host) -> RunConfig | None:
        """The run config from the coordinator's RunInfo (other senders' are ignored)."""
        report = Reporter()
        started = time.monotonic()
        while not self.stop.is_set():
            try:
                envelope = host.received.get(timeout=1.0)
            except queue.Empty:
                if time.monotonic() - started > 10:
                    report(f"waiting for run {host.run!r}'s config from the coordinator")
                continue
            if isinstance(envelope.body, RunInfo) and envelope.sender == self.coordinator:
                try:
                    return loads(envelope.body.config)
                except ConfigError as exc:
                    fail(f"the coordinator sent an invalid run config: {exc}")
        return None


def follow(args: argparse.Namespace, group: ranks.Ranks) -> None:
    """A follower rank of a multi-GPU node: the run config from rank 0, then the gradients of the
    batches rank 0 deals it, until rank 0 stops (or never joined a run)."""
    text = ranks.share(None, group)
    if text is None:
        return
    config = loads(text)
    use_deterministic_kernels()
    if args.shard:
        from node.sharded import Shards  # only here: importing FSDP takes a second

        Shards(config.model.model_config(), group, args.activation_checkpointing).follow()
        return
    model = Llama(config.model.model_config()).to(group.device)
    model.activation_checkpointing = args.activation_checkpointing
    ranks.follow(Trainer(model, None, config.data.micro_batch, group.device, group), group)


def load_data(config: RunConfig, cache: Cache | None = None) -> TokenDataset | ShardedDataset:
    """The run's data, checked before any stake is deposited: one line when it is not here."""
    d = config.data
    where = d.manifest or d.corpus
    if where != "stdlib" and not Path(where).exists():
        fail(
            f"run {config.run.name!r} trains on {where}, which is not on this machine: "
            "put it at that path and start again"
        )
    try:
        return build_data(config, cache)
    except (ValueError, OSError) as exc:  # ManifestError and ShardError are ValueErrors
        fail(f"the run's data at {where} cannot be used: {exc}")


def register(client: EranosClient, run_id: int, coordinator: bytes, stop: threading.Event) -> None:
    """Make sure this key is an active member of the run on chain, whose authority must be the
    coordinator that sent the run config (before any stake is deposited)."""
    report = Reporter()
    while not stop.is_set():
        try:
            authority = bytes(client.run(run_id).authority)
            if authority != coordinator:
                theirs, ours = (base58.b58encode(k).decode() for k in (authority, coordinator))
                fail(
                    f"run {run_id}'s authority on chain is {theirs}, not the coordinator "
                    f"{ours}: refusing to join"
                )
            member = client.member(run_id, client.key)
            if member is None or member.status != MemberStatus.ACTIVE:
                client.join(run_id)
                say(f"joined run {run_id} on chain")
            return
        except RpcUnavailable as exc:
            report(f"{exc}; retrying every {RETRY_S:.0f} s")
            stop.wait(RETRY_S)
        except (ProgramError, LookupError) as exc:
            fail(f"cannot join run {run_id}: {exc}")


def progress_line(p: Progress) -> str:
    if p.phase == "waiting":
        have, needed = p.members
        return f"round {p.round} [waiting for {needed} members, have {have}]"
    loss = "-" if p.loss is None else f"{p.loss:.3f}"
    return (
        f"round {p.round} [{p.phase}] loss {loss} payload {p.payload_bytes} B "
        f"applied {p.applied} verdicts {p.verdicts} syncs {p.synced}"
    )


def show_progress(progress: Progress, stop: threading.Event) -> None:
    """A live status line on a terminal, a line per change otherwise; returns when the run has
    finished (saying so) or the node is stopped."""
    console = Console(stderr=True)
    last = None
    with console.status("starting", spinner="dots") if console.is_terminal else nullcontext() as status:
        while not stop.wait(0.5):
            if progress.phase == "finished":
                say(f"the run has finished (the last round this node applied: {progress.applied})")
                return
            line = progress_line(progress)
            key = (progress.applied, progress.phase == "waiting" and progress.members)
            if status is not None:
                status.update(line)
            elif key != last:
                print(line, file=sys.stderr, flush=True)
            last = key
