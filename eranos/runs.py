"""`eranos run create|update|show`: the run on chain, as the run config's [chain] section says.

    eranos run create --config run.toml --keypair coordinator.json
    eranos run update --config run.toml --keypair coordinator.json [--pause | --resume]
    eranos run show   --config run.toml --authority <coordinator key>

The keypair that creates a run is its authority: the coordinator must run with the same key.
New stake, slash, points or unbonding take effect only after the unbonding period in force
(members who disagree can leave first); the run's mode is fixed at creation.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from solders.keypair import Keypair

from chain.client import EranosClient
from chain.errors import ChainError
from chain.keys import load_keypair, parse_pubkey
from chain.state import Member, Mode, RunParams
from chain.units import sol, tokens
from protocol.console import HelpFormatter, Parser, arg_type, read_environment
from protocol.run_config import ChainSection, ConfigError, RunConfig, load

MODES = {"permissionless": Mode.PERMISSIONLESS, "permissioned": Mode.PERMISSIONED}


def run_params(chain: ChainSection) -> RunParams:
    return RunParams(
        points_per_contribution=chain.points_per_batch,
        points_per_validation=chain.points_per_validation,
        required_stake=chain.stake_lamports,
        slash_amount=chain.slash_lamports,
        unbonding_seconds=chain.unbonding_s,
    )


def parser(prog: str) -> argparse.ArgumentParser:
    p = Parser(prog=prog, description=__doc__.split("\n\n")[0])
    commands = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    summaries = {
        "create": "create the run on chain from the run config (its authority: --keypair)",
        "update": "change the run's [chain] params, or pause or resume it",
        "show": "the run's params, state and members",
    }
    for name, summary in summaries.items():
        sub = commands.add_parser(name, help=summary, description=summary.capitalize() + ".")
        sub.formatter_class = HelpFormatter
        sub.add_argument("--config", required=name != "show", type=Path, help="the run config (TOML)")
        sub.add_argument("--rpc", help="Solana JSON-RPC URL (default: the config's run.rpc)")
        if name == "show":
            sub.add_argument("--run-id", type=int, help="on-chain run id (default: the config's)")
            who = sub.add_mutually_exclusive_group()
            who.add_argument("--authority", type=arg_type(parse_pubkey), help="the run's authority key")
            who.add_argument("--keypair", type=Path, help="the authority's keypair (for its key)")
        else:
            sub.add_argument("--keypair", required=True, type=Path, help="the run's authority keypair")
        if name == "update":
            pause = sub.add_mutually_exclusive_group()
            pause.add_argument("--pause", action="store_true", help="pause the run")
            pause.add_argument("--resume", action="store_true", help="resume a paused run")
    read_environment(p)
    return p


def main(argv: list[str] | None = None, prog: str = "eranos run") -> None:
    p = parser(prog)
    args = p.parse_args(argv)
    try:
        config = load(args.config) if args.config else RunConfig()
        keypair = load_keypair(args.keypair) if args.keypair else None
    except (ConfigError, ValueError) as exc:
        raise SystemExit(f"{prog}: {exc}") from None
    run_id = getattr(args, "run_id", None)
    run_id = config.run.chain_run_id if run_id is None else run_id
    if args.command == "show" and keypair is None and args.authority is None:
        p.error("say whose run: --authority KEY or --keypair FILE")
    authority = getattr(args, "authority", None) or keypair.pubkey()
    client = EranosClient.connect(args.rpc or config.run.rpc, keypair or Keypair(), authority=authority)
    try:
        {"create": create, "update": update, "show": show}[args.command](args, config, client, run_id)
    except (ChainError, LookupError) as exc:
        raise SystemExit(f"{prog}: {exc}") from None


def create(args: argparse.Namespace, config: RunConfig, client: EranosClient, run_id: int) -> None:
    if _exists(client, run_id):
        raise SystemExit(
            f"eranos run: run {run_id} of {client.key} already exists; 'eranos run update' changes its params"
        )
    cost, balance = client.creation_cost(), client.balance()
    if balance < cost:
        raise SystemExit(
            f"eranos run: {client.key} holds {sol(balance)}; creating a run takes about {sol(cost)} "
            f"(rent for its accounts and fees): fund it first (on a local chain: "
            f"eranos airdrop 10 --keypair {args.keypair})"
        )
    chain = config.chain
    run = client.create_run(run_id, MODES[chain.mode], run_params(chain), chain.token_decimals)
    print(f"created run {run_id} ({chain.mode}) at {run.address}, authority {run.authority}")
    _print_params(run.params, chain.token_decimals)


def update(args: argparse.Namespace, config: RunConfig, client: EranosClient, run_id: int) -> None:
    run = client.run(run_id)
    if run.mode != MODES[config.chain.mode]:
        raise SystemExit(
            f"eranos run: run {run_id} is {run.mode.name.lower()}; chain.mode = {config.chain.mode!r} "
            "cannot change after creation"
        )
    params = run_params(config.chain)
    paused = True if args.pause else False if args.resume else None
    changed = params != (run.pending or run.params)
    after = client.update_run(run_id, params if changed else None, paused)
    if after.paused != run.paused:
        print(f"run {run_id} {'paused' if after.paused else 'resumed'}")
    if not changed:
        print(f"run {run_id}: the params already match the config")
        return
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(after.pending_at))
    print(f"run {run_id}: new params take effect at {when} (after the unbonding period in force)")
    _print_params(params, client.token_decimals(after))


def show(args: argparse.Namespace, config: RunConfig, client: EranosClient, run_id: int) -> None:
    run = client.run(run_id)
    decimals = client.token_decimals(run)
    state = "paused" if run.paused else "running"
    print(f"run {run_id} ({run.mode.name.lower()}, {state}) at {run.address}")
    print(f"authority {run.authority}, reward mint {run.mint}")
    print(
        f"{run.rounds_recorded} rounds recorded (last {run.last_recorded_round}), "
        f"{run.active_count} of {run.member_count} members active, staked {sol(run.total_staked)}, "
        f"burned {sol(run.burned)}"
    )
    _print_params(run.params, decimals)
    if run.pending is not None:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(run.pending_at))
        print(f"pending from {when}:")
        _print_params(run.pending, decimals)
    members = client.members_of(run)
    if members:
        Console(width=160).print(member_table(members, decimals))


def member_table(members: list[Member], decimals: int) -> Table:
    table = Table("slot", "key", "status", "stake", "points", "claimed", "batches", "checks", "penalties")
    for m in members:
        table.add_row(
            str(m.slot),
            str(m.key),
            m.status.name.lower(),
            sol(m.stake),
            tokens(m.points_earned, decimals),
            tokens(m.points_claimed, decimals),
            str(m.contributions),
            str(m.validations),
            str(m.penalties),
        )
    return table


def _print_params(params: RunParams, decimals: int) -> None:
    print(
        f"  stake {sol(params.required_stake)}, slash {sol(params.slash_amount)}, "
        f"{tokens(params.points_per_contribution, decimals)} per batch, "
        f"{tokens(params.points_per_validation, decimals)} per check, "
        f"unbonding {params.unbonding_seconds} s"
    )


def _exists(client: EranosClient, run_id: int) -> bool:
    try:
        client.run(run_id)
    except LookupError:
        return False
    return True
