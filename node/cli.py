"""`eranos node`: run a compute node, or manage its membership on chain.

    eranos node run --keypair id.json --coordinator MULTIADDR [--rpc URL] [--device cuda]
                    [--announce /ip4/<public ip>/tcp/4002] [--node-config node.toml]
    eranos node status|claim|audit|leave|withdraw --keypair id.json --rpc URL --run-id N --authority KEY

The node learns the run (its name and config) from the coordinator, registers on chain if it is
not an active member yet (authorized runs: join; permissionless: join deposits the stake), then
trains until the run finishes (exit 0) or it is stopped. Every option can also be set as
ERANOS_<OPTION> or, for `run`, in a TOML file (`--node-config`); flags win over both.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import re
import signal
import sys
import threading
from pathlib import Path

from solders.keypair import Keypair
from solders.pubkey import Pubkey

from chain.keys import load_keypair, parse_pubkey
from node import account, ranks
from node.session import Session
from p2p.addresses import AddressError, parse_announce, parse_listen, parse_peer
from protocol.console import HelpFormatter, Parser, arg_type, read_environment, read_file, setup_logging

listen_addr, announce_addrs = arg_type(parse_listen), arg_type(parse_announce)
log = logging.getLogger("eranos.node")
DEFAULT_LISTEN = "/ip4/0.0.0.0/tcp/4002"
DEVICES = ("auto", "cpu", "cuda")


def parse_args(argv: list[str] | None, prog: str = "eranos node") -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else argv
    p = Parser(prog=prog, description=__doc__.split("\n\n")[0])
    commands = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = commands.add_parser(
        "run", help="train as a member of a run", description="Train as a member of a run.",
        formatter_class=HelpFormatter,
    )  # fmt: skip
    run.add_argument("--node-config", type=Path, help="a TOML file of these options (option = value)")
    run.add_argument("--keypair", required=True, type=Path, help="solana-keygen JSON keypair")
    run.add_argument(
        "--coordinator",
        required=True,
        type=peer_addr,
        help="the coordinator's /p2p/ multiaddr",
    )
    run.add_argument("--rpc", help="Solana JSON-RPC URL (default: the run config's)")
    run.add_argument("--run", help="the run's name (default: the one the coordinator serves)")
    run.add_argument("--device", default="auto", type=device_name, help="auto, cpu, cuda or cuda:N")
    run.add_argument("--listen", default=DEFAULT_LISTEN, type=listen_addr, help="p2p listen multiaddr")
    run.add_argument(
        "--announce",
        type=announce_addrs,
        help="multiaddrs peers dial, comma-separated (default: derived)",
    )
    run.add_argument("--workdir", type=Path, help="where weights are kept (default: eranos-node-<key>)")
    run.add_argument("--metrics", default="127.0.0.1:9400", help="Prometheus /metrics HOST:PORT, or 'off'")
    run.add_argument(
        "--data-cache",
        type=Path,
        default=Path("eranos-data"),
        help="where shards fetched from peers are kept",
    )
    run.add_argument(
        "--data-cache-gb",
        type=gigabytes,
        default=20.0,
        help="the most shard data kept in --data-cache; the least recently used go first (default 20)",
    )
    run.add_argument(
        "--activation-checkpointing",
        action="store_true",
        help="recompute activations in the backward pass: less memory, one more forward",
    )
    run.add_argument(
        "--shard",
        action="store_true",
        help="under torchrun: the ranks hold the model between them (FSDP), for models one GPU cannot hold",
    )
    run.add_argument("--no-chain", action="store_true", help="do not register on chain")
    run.add_argument("-v", "--verbose", action="store_true", help="debug logs")
    for name, summary in account.COMMANDS.items():
        sub = commands.add_parser(
            name, help=summary, description=summary.capitalize() + ".", formatter_class=HelpFormatter
        )
        sub.add_argument("--keypair", required=True, type=Path, help="solana-keygen JSON keypair")
        sub.add_argument("--rpc", required=True, help="Solana JSON-RPC URL")
        sub.add_argument("--run-id", required=True, type=int, help="on-chain run id")
        sub.add_argument("--authority", required=True, type=pubkey, help="the run's authority key")
        sub.add_argument("-v", "--verbose", action="store_true", help="debug logs")
        if name == "audit":
            sub.add_argument(
                "--workdir", type=Path, help="the node's work directory (default: eranos-node-<key>)"
            )
    config_file = _node_config(argv)
    if config_file is not None:
        read_file(run, config_file)
    read_environment(p)
    return p.parse_args(argv)


def _node_config(argv: list[str]) -> Path | None:
    for i, arg in enumerate(argv):
        if arg == "--node-config" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--node-config="):
            return Path(arg.partition("=")[2])
    env = os.environ.get("ERANOS_NODE_CONFIG")
    return Path(env) if env else None


def parse_device(text: str) -> str:
    if text in DEVICES or re.fullmatch(r"cuda:\d+", text):
        return text
    close = difflib.get_close_matches(text, DEVICES, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown device {text!r}{hint} (auto, cpu, cuda or cuda:N)")


def parse_gigabytes(text: str) -> float:
    size = float(text)
    if not size > 0:
        raise ValueError(f"a size in GB must be positive, got {text}")
    return size


device_name, peer_addr, pubkey = arg_type(parse_device), arg_type(parse_peer), arg_type(parse_pubkey)
gigabytes = arg_type(parse_gigabytes)


def read_keypair(path: Path) -> Keypair:
    try:
        return load_keypair(path)
    except ValueError as exc:
        raise SystemExit(f"eranos node: {exc}") from None


def default_workdir(key: Pubkey) -> Path:
    """One per key, so two nodes started in one directory never share weights or logs."""
    return Path(f"eranos-node-{str(key)[:8]}")


def main(argv: list[str] | None = None, prog: str = "eranos node") -> None:
    args = parse_args(argv, prog)
    setup_logging(args.verbose)
    keypair = read_keypair(args.keypair)
    if args.command in ("run", "audit"):
        args.workdir = args.workdir or default_workdir(keypair.pubkey())
    if args.command == "run":
        run(args)
    else:
        from chain.client import EranosClient

        account.act(args, EranosClient.connect(args.rpc, keypair, authority=args.authority))


def run(args: argparse.Namespace, behaviour=None) -> None:
    """Train as a member until the run finishes or the node is stopped. `behaviour`: the
    simulator's adversaries only."""
    keypair = read_keypair(args.keypair)
    workdir = args.workdir or default_workdir(keypair.pubkey())
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    outcome: int | str | None = 0
    try:
        Session(args, keypair, workdir, stop).run(behaviour)
    except AddressError as exc:
        outcome = f"eranos node: {exc}"
    except SystemExit as exc:
        outcome = exc.code
    if ranks.launched():
        ranks.end_rank(outcome)
    if outcome:
        raise SystemExit(outcome)
