"""`eranos node`: run a compute node, or claim and inspect its rewards.

    eranos node run --keypair id.json --coordinator MULTIADDR [--rpc URL] [--device cuda] [--run NAME]
    eranos node claim  --keypair id.json --rpc URL --run-id N --authority KEY
    eranos node status --keypair id.json --rpc URL --run-id N --authority KEY
    eranos node audit  --keypair id.json --rpc URL --run-id N --authority KEY [--workdir DIR]

The node learns the run config from the coordinator, registers on chain if it is not an active
member yet (authorized runs: join; permissionless: join deposits the stake), then trains.
Unreachable endpoints are reported and retried; bad flags and files are refused by name.
"""

from __future__ import annotations

import argparse
import logging
import queue
import signal
import sys
import threading
from contextlib import nullcontext
from pathlib import Path

import base58
from rich.console import Console
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from chain.client import EranosClient
from chain.errors import ChainError, ProgramError, RpcUnavailable
from chain.keys import load_keypair
from chain.state import MemberStatus
from node.audit import LOG, audit, read_log
from node.runtime import Behaviour, NodeRuntime
from node.train import pick_device, use_deterministic_kernels
from p2p.errors import LocalError, PeerUnreachable
from p2p.host import Host
from p2p.identity import Identity, key_of_peer_id
from p2p.messages import RunInfo
from protocol.console import HelpFormatter, setup_logging
from protocol.run_config import ConfigError, RunConfig, loads

log = logging.getLogger("eranos.node")
RETRY_S = 5.0


def parse_args(argv: list[str] | None, prog: str = "eranos node") -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    commands = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = commands.add_parser(
        "run",
        help="train as a member of a run",
        description="Train as a member of a run.",
        formatter_class=HelpFormatter,
    )
    run.add_argument("--keypair", required=True, type=Path, help="solana-keygen JSON keypair")
    run.add_argument("--coordinator", required=True, help="the coordinator's multiaddr (with /p2p/<peer id>)")
    run.add_argument("--rpc", help="Solana JSON-RPC URL (default: the run config's)")
    run.add_argument("--run", default="eranos", help="the run's name (its gossip topic)")
    run.add_argument("--device", default="auto", help="cpu, cuda or auto")
    run.add_argument("--listen", default="/ip4/0.0.0.0/tcp/0", help="p2p listen multiaddr")
    run.add_argument("--workdir", type=Path, default=Path("eranos-node"), help="where weights are kept")
    run.add_argument("--no-chain", action="store_true", help="do not register on chain")
    run.add_argument("-v", "--verbose", action="store_true", help="debug logs")
    commands_on_chain = (
        ("status", "show this key's membership and points"),
        ("claim", "claim rewards"),
        ("audit", "check the chain's record of this node against its own log"),
    )
    for name, summary in commands_on_chain:
        sub = commands.add_parser(
            name, help=summary, description=summary.capitalize() + ".", formatter_class=HelpFormatter
        )
        sub.add_argument("--keypair", required=True, type=Path, help="solana-keygen JSON keypair")
        sub.add_argument("--rpc", required=True, help="Solana JSON-RPC URL")
        sub.add_argument("--run-id", required=True, type=int, help="on-chain run id")
        sub.add_argument(
            "--authority",
            required=True,
            type=parse_pubkey,
            help="the run's authority (the coordinator's key)",
        )
        sub.add_argument("-v", "--verbose", action="store_true", help="debug logs")
        if name == "audit":
            sub.add_argument(
                "--workdir", type=Path, default=Path("eranos-node"), help="the node's work directory"
            )
    return p.parse_args(argv)


def connect_coordinator(host: Host, addr: str, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            host.connect(addr, timeout=10)
            return
        except (PeerUnreachable, LocalError) as exc:
            print(
                f"eranos node: cannot reach the coordinator {addr}: {exc}; retrying in {RETRY_S:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            stop.wait(RETRY_S)


def wait_for_config(host: Host, coordinator: bytes, stop: threading.Event) -> RunConfig | None:
    """The run config from the coordinator's RunInfo (other senders' are ignored)."""
    while not stop.is_set():
        try:
            envelope = host.received.get(timeout=1.0)
        except queue.Empty:
            continue
        if isinstance(envelope.body, RunInfo) and envelope.sender == coordinator:
            try:
                return loads(envelope.body.config)
            except ConfigError as exc:
                raise SystemExit(f"eranos node: the coordinator sent an invalid run config: {exc}") from None
    return None


def register(client: EranosClient, run_id: int, coordinator: bytes, stop: threading.Event) -> None:
    """Make sure this key is an active member of the run on chain, whose authority must be the
    coordinator that sent the run config (before any stake is deposited)."""
    while not stop.is_set():
        try:
            authority = bytes(client.run(run_id).authority)
            if authority != coordinator:
                theirs, ours = (base58.b58encode(k).decode() for k in (authority, coordinator))
                raise SystemExit(
                    f"eranos node: run {run_id}'s authority on chain is {theirs}, not the coordinator "
                    f"{ours}: refusing to join"
                )
            member = client.member(run_id, client.key)
            if member is None or member.status != MemberStatus.ACTIVE:
                client.join(run_id)
                print(f"eranos node: joined run {run_id} on chain", flush=True)
            return
        except RpcUnavailable as exc:
            print(f"eranos node: {exc}; retrying in {RETRY_S:.0f} s", file=sys.stderr, flush=True)
            stop.wait(RETRY_S)
        except (ProgramError, LookupError) as exc:
            raise SystemExit(f"eranos node: cannot join run {run_id}: {exc}") from None


def coordinator_key(addr: str) -> bytes:
    """The ed25519 key inside a /p2p/<peer id> multiaddr: the only signer the node obeys."""
    _, sep, peer = addr.rpartition("/p2p/")
    try:
        return key_of_peer_id(peer)
    except ValueError:
        raise SystemExit(
            f"eranos node: --coordinator {addr!r} must end in /p2p/<the coordinator's peer id>"
        ) from None


def rewards(args: argparse.Namespace, keypair: Keypair) -> None:
    client = EranosClient.connect(args.rpc, keypair, authority=args.authority)
    try:
        member = client.member(args.run_id, client.key)
        if member is None:
            raise SystemExit(f"eranos node: {client.key} is not a member of run {args.run_id}")
        if args.command == "claim":
            amount = client.claim(args.run_id) if member.unclaimed else 0
            print(f"claimed {amount} tokens; balance {client.token_balance(args.run_id)}")
        elif args.command == "audit":
            run_audit(args, client, member)
        else:
            print(
                f"{client.key}: {member.status.name.lower()}, slot {member.slot}, stake {member.stake}, "
                f"points {member.points_earned} (claimed {member.points_claimed}), "
                f"contributions {member.contributions}, validations {member.validations}, "
                f"penalties {member.penalties}, tokens {client.token_balance(args.run_id)}"
            )
    except ChainError as exc:
        raise SystemExit(f"eranos node: {exc}") from None


def run_audit(args: argparse.Namespace, client: EranosClient, member) -> None:
    log = read_log(args.workdir)
    roots = {r.round: r.root for r in client.run(args.run_id).recent}
    findings = audit(bytes(client.key), log, roots, member.contributions)
    checked = sum(1 for entry in log if entry.round in roots and entry.complete)
    print(f"{len(log)} rounds in {args.workdir / LOG}, {checked} checked against the chain's recent record")
    for finding in findings:
        print(f"MISMATCH {finding}")
    if findings:
        raise SystemExit(1)
    print("the chain's record of this node matches its own log")


def main(argv: list[str] | None = None, prog: str = "eranos node") -> None:
    args = parse_args(argv, prog)
    setup_logging(args.verbose)
    if args.command == "run":
        run(args)
    else:
        rewards(args, read_keypair(args.keypair))


def parse_pubkey(text: str) -> Pubkey:
    try:
        return Pubkey.from_string(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a base58 public key: {text!r}") from None


def read_keypair(path: Path) -> Keypair:
    try:
        return load_keypair(path)
    except ValueError as exc:
        raise SystemExit(f"eranos node: {exc}") from None


def run(args: argparse.Namespace, behaviour: Behaviour | None = None) -> None:
    """Train as a member until stopped. `behaviour`: the simulator's adversaries only."""
    keypair = read_keypair(args.keypair)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    coordinator = coordinator_key(args.coordinator)
    identity = Identity.from_seed(bytes(keypair)[:32])
    host = Host(identity, args.run, listen=args.listen, pinned=[coordinator]).start()
    runtime = None
    try:
        connect_coordinator(host, args.coordinator, stop)
        config = wait_for_config(host, coordinator, stop)
        if config is None:
            return
        if not args.no_chain:
            client = EranosClient.connect(
                args.rpc or config.run.rpc, keypair, authority=Pubkey.from_bytes(coordinator)
            )
            register(client, config.run.chain_run_id, coordinator, stop)
        use_deterministic_kernels()
        runtime = NodeRuntime(config, host, coordinator, args.workdir, pick_device(args.device), behaviour)
        worker = threading.Thread(target=runtime.run, args=(stop,), name="node", daemon=True)
        worker.start()
        show_progress(runtime, stop)
        worker.join(10)
    finally:
        stop.set()
        if runtime is not None:
            runtime.close()
        host.close()


def show_progress(runtime: NodeRuntime, stop: threading.Event) -> None:
    """A live status line on a terminal; a line per applied round otherwise."""
    console = Console(stderr=True)
    last = -2
    with console.status("starting", spinner="dots") if console.is_terminal else nullcontext() as status:
        while not stop.wait(0.5):
            p = runtime.progress
            line = (
                f"round {p.round} [{p.phase}] loss {p.loss if p.loss is None else round(p.loss, 4)} "
                f"payload {p.payload_bytes} B applied {p.applied} verdicts {p.verdicts} syncs {p.synced}"
            )
            if status is not None:
                status.update(line)
            elif p.applied != last:
                last = p.applied
                print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
