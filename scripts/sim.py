"""`eranos sim`: a whole run on 127.0.0.1, with faults on demand.

Starts the embedded localnet (or uses `--rpc URL`), deploys nothing (the program is built in),
creates a permissionless run and its reward mint, funds N node keys, starts `eranos coordinator`
and N `eranos node` processes with the tiny model on the stdlib corpus, and runs R rounds.

    eranos sim                                   # 4 nodes, 20 rounds
    eranos sim --nodes 4 --rounds 20 --kill 2@5 --join 3@10 --adversary flip@1 --json
    eranos sim --hostile                         # plus a peer sending hostile gossip all run long

At the end it prints and writes (out/sim/summary.json, loss.png, bytes.png): loss per round,
bytes per node per step against a dense bf16 gradient, model-hash agreement per round, lost
batches, penalties, and every member's on-chain points and token balance after claiming.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import Progress
from solders.keypair import Keypair

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chain.client import EranosClient, RpcTransport  # noqa: E402
from chain.keys import save_keypair  # noqa: E402
from chain.localnet import Localnet  # noqa: E402
from eranos.runs import MODES, run_params  # noqa: E402
from node.audit import LOG as AUDIT_LOG  # noqa: E402
from node.checkpoint import load_model, model_hash  # noqa: E402
from node.model import Llama  # noqa: E402
from node.outputs import EVALS  # noqa: E402
from p2p.identity import (
    Identity,  # noqa: E402
    peer_id_of,  # noqa: E402
)
from protocol.run_config import RunConfig, dumps, load  # noqa: E402
from protocol.usage import USAGE  # noqa: E402
from scripts.sim_args import parse_args  # noqa: E402
from scripts.sim_report import plot, problems, report, resources  # noqa: E402
from scripts.sim_summary import summarize  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SOL = 10**9
# Nodes run below the coordinator's priority: here they share the cores with the one process
# that serves them all (on a real run it has its own host), and a coordinator starved by the
# processes it serves reads their heartbeats late and drops them for silence.
NODE_NICENESS = 10
console = Console(stderr=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sim:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.out = args, args.out
        self.out.mkdir(parents=True, exist_ok=True)
        for old in [
            self.out / "journal.jsonl",
            self.out / "coordinator.events.jsonl",
            *self.out.glob("node-*/events.jsonl"),
            *self.out.glob(f"node-*/{AUDIT_LOG}"),  # an earlier run's rounds fail this run's audit
            *self.out.glob(f"node-*/{EVALS}"),
            self.out / USAGE,
            *self.out.glob(f"node-*/{USAGE}"),
        ]:
            old.unlink(missing_ok=True)  # a new run, not a restart
        self.procs: dict[str, subprocess.Popen] = {}
        self.killed: set[str] = set()  # processes the simulator killed on purpose
        self.mid_round: tuple[str, ...] = ("training",)  # the phases a --kill may strike in
        self.left: dict[int, dict] = {}  # node -> when it left on chain and what it held then
        self.chain: EranosClient | None = None
        self.nodes: list[Keypair] = []
        self.run_id = 0
        self.server = None
        self.coordinator_cmd: list[str] = []
        self.node_cmd: Callable[[int], list[str]] = lambda i: []
        self.env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def start_chain(self) -> str:
        if self.args.rpc:
            return self.args.rpc
        self.server = Localnet().serve("127.0.0.1", free_port())
        return self.server.url

    def keys(self) -> tuple[Keypair, list[Keypair]]:
        authority, nodes = Keypair(), [Keypair() for _ in range(self.args.nodes)]
        save_keypair(authority, self.out / "keys" / "coordinator.json")
        for i, kp in enumerate(nodes):
            save_keypair(kp, self.out / "keys" / f"node-{i}.json")
        return authority, nodes

    def create_run(
        self, rpc: str, authority: Keypair, nodes: list[Keypair], config: RunConfig
    ) -> EranosClient:
        """What `eranos run create` does with the config's [chain] section, and funded node keys."""
        client = EranosClient(RpcTransport(rpc), authority)
        client.airdrop(100 * SOL)
        chain = config.chain
        client.create_run(config.run.chain_run_id, MODES[chain.mode], run_params(chain), chain.token_decimals)
        for kp in nodes:
            client.airdrop(SOL, kp.pubkey())
        return client

    def member_client(self, node: int) -> EranosClient:
        return EranosClient(self.chain.transport, self.nodes[node], authority=self.chain.key)

    def leave(self, node: int, finalized: int) -> None:
        """The node leaves the run on chain (its process keeps running, as a careless operator's)."""
        client = self.member_client(node)
        client.leave(self.run_id)
        m = client.member(self.run_id, client.key)
        self.left[node] = {
            "after_round": finalized,
            "points_at_leave": m.points_earned,
            "unbond_at": m.unbond_at,
        }

    def withdraw_left(self) -> None:
        """Withdraw what each node that left still has staked, once its unbonding ended."""
        for node, info in self.left.items():
            time.sleep(max(0.0, info["unbond_at"] - time.time() + 1))
            client = self.member_client(node)
            m = client.member(self.run_id, client.key)
            info["withdrawn"] = m.stake
            if m.stake:
                client.withdraw_stake(self.run_id)

    def spawn(self, name: str, cmd: list[str], cwd: Path = ROOT, nice: int = 0) -> None:
        log = open(self.out / f"{name}.log", "w")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=cwd)
        if nice:  # set from here, not in the child between fork and exec: the sim has threads
            os.setpriority(os.PRIO_PROCESS, proc.pid, nice)
        self.procs[name] = proc

    def spawn_node(self, node: int) -> None:
        self.spawn(f"node-{node}", self.node_cmd(node), cwd=self.workdir(node), nice=NODE_NICENESS)

    def workdir(self, node: int) -> Path:
        """Node i's work directory, also its working directory: the run config's relative paths
        (data, model) resolve for the coordinator only, so nodes fetch them as a stranger's would."""
        path = self.out / f"node-{node}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def stop_processes(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()

    def close(self) -> None:
        self.stop_processes()
        if self.server is not None:
            self.server.close()


def node_cmd(
    args: argparse.Namespace, i: int, coordinator: str, rpc: str, run: str, keys: list[str]
) -> list[str]:
    """Node i's command: `eranos node run`, or the adversary entry point for a dishonest one,
    whose partners are the other adversaries (one operator's identities)."""
    options = [
        "--keypair", str(args.out / "keys" / f"node-{i}.json"), "--coordinator", coordinator,
        "--rpc", rpc, "--run", run, "--device", "cpu", "--listen", "/ip4/127.0.0.1/tcp/0",
        "--metrics", "127.0.0.1:0", "--workdir", str(args.out / f"node-{i}"),
        *(["-v"] if args.verbose else []),
    ]  # fmt: skip
    if i in args.rank_counts:
        torchrun = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.rank_counts[i]}"]
        # "--" ends torchrun's options, which would take the node's --run for its --run-path
        shard = ["--shard"] if args.shard else []
        return [sys.executable, *torchrun, "-m", "--", "eranos", "node", "run", *options, *shard]
    if i not in args.adv:
        return [sys.executable, "-m", "eranos", "node", "run", *options]
    partners = ",".join(keys[j] for j in sorted(args.adv) if j != i)
    adversary = ["--adversary", args.adv[i], "--partners", partners]
    return [sys.executable, str(ROOT / "scripts" / "adversary_node.py"), *adversary, *options]


def initial_model_hash(config: RunConfig, directory: Path) -> str:
    """The model round 0 starts from, which the run pins: the weights at `model.path` (relative to
    the config's `directory`), or what every member computes from the preset and seed."""
    if config.model.path:
        return model_hash(load_model(directory / config.model.path))
    return model_hash(Llama(config.model.model_config(), seed=config.model.seed))


def run_sim(args: argparse.Namespace) -> dict:
    started = time.monotonic()
    sim = Sim(args)
    base = load(args.config)
    try:
        rpc = sim.start_chain()
        authority, nodes = sim.keys()
        run_id = base.run.chain_run_id
        chain = sim.create_run(rpc, authority, nodes, base)
        sim.chain, sim.nodes, sim.run_id = chain, nodes, run_id
        config = replace(
            base,
            run=replace(base.run, rpc=rpc),
            model=replace(base.model, hash=initial_model_hash(base, args.config.parent)),
            rounds=replace(
                base.rounds,
                rounds=args.rounds,
                min_nodes=min(base.rounds.min_nodes, args.nodes),
                snapshot_every=args.rounds + 1,  # the summary reads every round's events from the journal
                overlap=base.rounds.overlap if args.overlap is None else args.overlap == "on",
            ),
        )
        (args.out / "run.toml").write_text(dumps(config))
        # overlapped, members train the next round while this one is checked: both are mid-round
        sim.mid_round = ("training", "finalize") if config.rounds.overlap else ("training",)
        port, http_port = free_port(), free_port()
        identity = Identity.from_seed(bytes(authority)[:32])
        coordinator = f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer_id_of(identity.public_key)}"
        keys = args.out / "keys" / "coordinator.json"
        sim.coordinator_cmd = [
            sys.executable, "-m", "eranos", "coordinator", "--config", str(args.out / "run.toml"),
            "--keypair", str(keys), "--listen", f"/ip4/127.0.0.1/tcp/{port}",
            "--journal", str(args.out / "journal.jsonl"),
            "--events", str(args.out / "coordinator.events.jsonl"),
            "--http", f"127.0.0.1:{http_port}", "--no-live", *(["-v"] if args.verbose else []),
        ]  # fmt: skip
        sim.spawn("coordinator", sim.coordinator_cmd, cwd=args.config.parent)
        if args.hostile:
            hostile = [sys.executable, str(ROOT / "scripts" / "hostile_peer.py"), "--connect", coordinator]
            sim.spawn("hostile", [*hostile, "--run", config.run.name, "--duration", str(args.timeout)])
        keys = [bytes(k.pubkey()).hex() for k in nodes]
        sim.node_cmd = lambda i: node_cmd(args, i, coordinator, rpc, config.run.name, keys)
        for i in range(args.nodes):
            if i not in args.joins:
                sim.spawn_node(i)
        status = watch(sim, f"http://127.0.0.1:{http_port}/status.json")
        exited = sorted(n for n, p in sim.procs.items() if p.poll() is not None and n not in sim.killed)
        sim.stop_processes()
        sim.withdraw_left()
        summary = summarize(args, config, chain, nodes, status, run_id, exited)
        summary["interrupted"] = status.get("interrupted", False)
        summary["resources"] = resources(args.out, args.nodes, len(summary["rounds_recorded_on_chain"]))
        summary["left"] = {
            str(n): {**info, "points_at_end": summary["members"][n]["points"]} for n, info in sim.left.items()
        }
        summary["wall_seconds"] = time.monotonic() - started
        summary["verdict"] = problems(summary) or "pass"
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
        plot(summary, args.out)
        return summary
    finally:
        sim.close()


def watch(sim: Sim, status_url: str) -> dict:
    """Poll the coordinator's status until the run finishes, killing and starting nodes on cue;
    Ctrl-C ends it early with the last status, marked interrupted (the summary is still written)."""
    status: dict = {}
    try:
        return poll(sim, status_url, status)
    except KeyboardInterrupt:
        console.print("interrupted: stopping the run and writing the partial summary (Ctrl-C again aborts)")
        return {**status, "interrupted": True}


def poll(sim: Sim, status_url: str, status: dict) -> dict:
    args = sim.args
    deadline = time.monotonic() + args.timeout
    joined, restarted = set(), False
    with Progress(console=console, transient=not console.is_terminal) as progress:
        task = progress.add_task("starting the coordinator and nodes", total=args.rounds)
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if (
                args.restart_coordinator is not None
                and not restarted
                and status.get("finalized_rounds", 0) >= args.restart_coordinator
            ):
                restarted = True
                sim.procs["coordinator"].kill()
                sim.procs["coordinator"].wait()
                sim.spawn("coordinator-restarted", sim.coordinator_cmd, cwd=args.config.parent)
                sim.procs["coordinator"] = sim.procs.pop("coordinator-restarted")
                status.clear()
                continue
            if sim.procs["coordinator"].poll() is not None:
                raise SystemExit(f"eranos sim: the coordinator exited; see {args.out / 'coordinator.log'}")
            try:
                status.update(httpx.get(status_url, timeout=2).json())
            except (httpx.HTTPError, ValueError):
                continue
            progress.update(
                task,
                completed=status["finalized_rounds"],
                description=progress_text(status),
            )
            for node, at in args.kills.items():
                name = f"node-{node}"
                if name not in sim.killed and status["round"] >= at and status["phase"] in sim.mid_round:
                    sim.procs[name].kill()
                    sim.killed.add(name)
            for node, at in args.leaves.items():
                if node not in sim.left and status["finalized_rounds"] >= at:
                    sim.leave(node, status["finalized_rounds"])
            for node, at in args.joins.items():
                if node not in joined and status["finalized_rounds"] >= at:
                    sim.spawn_node(node)
                    joined.add(node)
            recorded = status["chain_recorded"] == status["last_finalized"] and status["chain_pending"] == 0
            if status["phase"] == "finished" and recorded:
                return status
    raise SystemExit(f"eranos sim: the run did not finish within {args.timeout:.0f} s (last status {status})")


def progress_text(status: dict) -> str:
    loss = "-" if status.get("loss") is None else f"{status['loss']:.3f}"
    why = f" {status['why']}" if status.get("why") else ""
    return f"round {status['round']} [{status['phase']}{why}] loss {loss}"


def main(argv: list[str] | None = None, prog: str = "eranos sim") -> None:
    args = parse_args(argv, prog)
    summary = run_sim(args)
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    report(summary, args.out, Console(width=120))
    if problems(summary):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
