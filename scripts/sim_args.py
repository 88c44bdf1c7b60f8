"""The command line of `eranos sim` (scripts/sim.py): its flags, and the faults they ask for
checked against the run before anything starts."""

from __future__ import annotations

import argparse
from pathlib import Path

from protocol.console import HelpFormatter, Parser, read_environment
from scripts.adversaries import KINDS, PARTNERED

ROOT = Path(__file__).resolve().parent.parent
DESCRIPTION = "`eranos sim`: a whole run on 127.0.0.1, with faults on demand."


def at_pairs(
    values: list[str], flag: str, kinds: tuple[str, ...] | None = None, shape: str = "NODE@ROUND"
) -> list[tuple[str, int]]:
    """Parse KIND@NODE or NODE@ROUND values, repeated or comma-separated; refuse bad ones naming
    the flag."""
    out = []
    for v in (part for value in values for part in value.split(",")):
        left, sep, right = v.partition("@")
        if not sep or not right.isdigit() or (kinds is None and not left.isdigit()):
            raise SystemExit(f"eranos sim: {flag} {v!r}: expected {'KIND@NODE' if kinds else shape}")
        if kinds is not None and left not in kinds:
            raise SystemExit(f"eranos sim: {flag} {v!r}: kind must be one of {', '.join(kinds)}")
        out.append((left, int(right)))
    return out


def parse_args(argv: list[str] | None, prog: str = "eranos sim") -> argparse.Namespace:
    p = Parser(prog=prog, description=DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("--nodes", type=int, default=4, help="compute nodes to start")
    p.add_argument("--rounds", type=int, default=20, help="rounds to run")
    p.add_argument(
        "--kill", action="append", default=[], metavar="NODE@ROUND", help="SIGKILL a node mid-round"
    )
    p.add_argument("--join", action="append", default=[], metavar="NODE@ROUND", help="start a node late")
    p.add_argument(
        "--leave",
        action="append",
        default=[],
        metavar="NODE@ROUND",
        help="the node leaves the run on chain after this many rounds and withdraws once unbonded",
    )
    p.add_argument(
        "--adversary",
        action="append",
        default=[],
        metavar="KIND@NODE",
        help=f"a dishonest node (scripts/adversaries.py): {', '.join(KINDS)}; {', '.join(PARTNERED)} "
        "act with every other adversary as one operator",
    )
    p.add_argument(
        "--ranks",
        action="append",
        default=[],
        metavar="NODE@N",
        help="start the node with torchrun as N ranks (gloo on the CPU: node/ranks.py)",
    )
    p.add_argument(
        "--shard",
        action="store_true",
        help="the --ranks nodes hold the model between their ranks (FSDP: node/sharded.py)",
    )
    p.add_argument(
        "--restart-coordinator",
        type=int,
        metavar="ROUND",
        help="SIGKILL the coordinator after this many finalized rounds and restart it from its journal",
    )
    p.add_argument(
        "--hostile",
        action="store_true",
        help="add a peer that sends malformed, forged, replayed and non-member gossip all run long",
    )
    p.add_argument("--rpc", help="use this Solana JSON-RPC endpoint instead of the embedded localnet")
    p.add_argument(
        "--config", type=Path, default=ROOT / "configs" / "sim.toml",
        help="the run config (TOML); its relative paths (data, model) are from its directory",
    )  # fmt: skip
    p.add_argument(
        "--overlap", choices=["on", "off"],
        help="overlapped rounds: train the next round while this one is checked (default: the config's)",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=ROOT / "out" / "sim", help="logs, summary and plots go here")
    p.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.add_argument(
        "-v", "--verbose", action="store_true", help="detailed logs from every process (out/*.log)"
    )
    read_environment(p)
    args = p.parse_args(argv)
    args.out, args.config = args.out.resolve(), args.config.resolve()  # processes run elsewhere
    if not 1 <= args.nodes <= 64:
        p.error("--nodes must be between 1 and 64")
    if args.rounds < 1:
        p.error("--rounds must be positive")
    args.kills = {n: r for n, r in ((int(a), b) for a, b in at_pairs(args.kill, "--kill"))}
    args.joins = {n: r for n, r in ((int(a), b) for a, b in at_pairs(args.join, "--join"))}
    args.leaves = {n: r for n, r in ((int(a), b) for a, b in at_pairs(args.leave, "--leave"))}
    args.adv = {n: k for k, n in at_pairs(args.adversary, "--adversary", tuple(KINDS))}
    args.rank_counts = {int(n): r for n, r in at_pairs(args.ranks, "--ranks", shape="NODE@N")}
    if any(not 2 <= r <= 8 for r in args.rank_counts.values()):
        p.error("--ranks NODE@N: N must be between 2 and 8")
    if args.shard and not args.rank_counts:
        p.error("--shard shards the nodes --ranks starts: name one (--ranks NODE@N)")
    for n in [*args.kills, *args.joins, *args.leaves, *args.adv, *args.rank_counts]:
        if not 0 <= n < args.nodes:
            p.error(f"node {n} does not exist (nodes are 0..{args.nodes - 1})")
    return args
