"""`eranos`: one command, a subcommand per part, the way `solana` and `accelerate` work.

    eranos keygen -o id.json           a new keypair
    eranos airdrop 10 --keypair id.json  SOL from a local chain's faucet
    eranos run create|update|show ...  the run on chain, from its run config
    eranos node run|status|claim|leave|withdraw ...  a compute node, and its membership on chain
    eranos coordinator ...             the rounds of one run
    eranos localnet ...                Solana JSON-RPC over an in-process LiteSVM with the program
    eranos sim ...                     a whole multi-node run on 127.0.0.1 with the embedded chain

Each subcommand's module is imported only when it runs, so `eranos --help` and `eranos
--version` never load torch, libp2p or solana.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys

from eranos import __version__
from protocol.console import Parser

COMMANDS: dict[str, tuple[str, str]] = {
    "keygen": ("eranos.wallet:keygen", "write a new keypair (solana-keygen's JSON format)"),
    "airdrop": ("eranos.wallet:airdrop", "request SOL from a local chain's faucet"),
    "run": ("eranos.runs", "create, update or show a run on chain from its run config"),
    "coordinator": ("coordinator.cli", "run the rounds of one run and record them on chain"),
    "node": ("node.cli", "run a compute node; its standing, rewards, leaving and stake on chain"),
    "localnet": ("eranos.localnet", "serve Solana JSON-RPC on 127.0.0.1 with the eranos program"),
    "export": ("node.export", "write a node's current model as a Hugging Face checkpoint"),
    "prepare-data": ("eranos.prepare_data", "text, JSONL or Parquet in; token shards and a manifest out"),
    "prepare-eval": ("eranos.prepare_eval", "multiple-choice tasks in; the token ids every node scores out"),
    "sim": ("scripts.sim", "a whole multi-node run on 127.0.0.1 with the embedded chain"),
    "timeline": ("eranos.timeline", "draw where a run's time went, from its processes' event logs"),
}


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="eranos",
        description="Train one model across independently owned GPU boxes.",
        epilog="'eranos COMMAND --help' lists a command's own options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"eranos {__version__}")
    commands = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, summary) in COMMANDS.items():
        commands.add_parser(name, help=summary, add_help=False)
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    command, rest = (argv[0], argv[1:]) if argv else (None, [])
    if command not in COMMANDS:
        if command is not None and not command.startswith("-"):
            close = difflib.get_close_matches(command, COMMANDS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            print(f"eranos: no command {command!r}{hint} (eranos --help lists them)", file=sys.stderr)
            raise SystemExit(2)
        parser().parse_args(argv)
        return
    module, _, function = COMMANDS[command][0].partition(":")
    entry = getattr(importlib.import_module(module), function or "main")
    entry(rest, prog=f"eranos {command}")


if __name__ == "__main__":
    main()
