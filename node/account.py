"""A member's account on chain, from the command line: `eranos node status|claim|audit|leave|withdraw`.

status    standing, stake and points
claim     mint the unclaimed points as reward tokens
audit     compare the chain's record of this node with its own log (node/audit.py)
leave     stop being a member; the stake unbonds for the run's unbonding period
withdraw  take the stake back once it has unbonded
"""

from __future__ import annotations

import argparse
import time

from chain.client import EranosClient
from chain.errors import ChainError, ProgramError
from chain.state import Member, MemberStatus
from chain.units import sol, tokens
from node.audit import LOG, audit, read_log

COMMANDS = {
    "status": "show this key's membership, stake and points",
    "claim": "claim rewards",
    "audit": "check the chain's record of this node against its own log",
    "leave": "leave the run; the stake unbonds for the run's unbonding period",
    "withdraw": "take the stake back once it has unbonded",
}


def act(args: argparse.Namespace, client: EranosClient) -> None:
    """One of COMMANDS for `client`'s key in run `args.run_id`; every failure one line."""
    try:
        member = client.member(args.run_id, client.key)
        if member is None:
            raise SystemExit(f"eranos node: {client.key} is not a member of run {args.run_id}")
        decimals = client.token_decimals(client.run(args.run_id))
        handlers = {
            "status": status,
            "claim": claim,
            "audit": run_audit,
            "leave": leave,
            "withdraw": withdraw,
        }
        handlers[args.command](args, client, member, decimals)
    except (ChainError, LookupError) as exc:
        raise SystemExit(f"eranos node: {exc}") from None


def status(args: argparse.Namespace, client: EranosClient, member: Member, decimals: int) -> None:
    print(
        f"{client.key}: {member.status.name.lower()} in run {args.run_id}, slot {member.slot}, "
        f"stake {sol(member.stake)}, points {tokens(member.points_earned, decimals)} "
        f"(claimed {tokens(member.points_claimed, decimals)}), batches {member.contributions}, "
        f"checks {member.validations}, penalties {member.penalties}, "
        f"balance {tokens(client.token_balance(args.run_id), decimals)}"
    )
    if member.status == MemberStatus.LEFT and member.stake:
        print(_unbonding(member))


def claim(args: argparse.Namespace, client: EranosClient, member: Member, decimals: int) -> None:
    amount = client.claim(args.run_id) if member.unclaimed else 0
    print(
        f"claimed {tokens(amount, decimals)}; balance {tokens(client.token_balance(args.run_id), decimals)}"
    )


def leave(args: argparse.Namespace, client: EranosClient, member: Member, decimals: int) -> None:
    if member.status != MemberStatus.ACTIVE:
        raise SystemExit(
            f"eranos node: {client.key} is {member.status.name.lower()} in run {args.run_id}, not active"
        )
    after = client.leave(args.run_id)
    print(f"left run {args.run_id} with {tokens(after.unclaimed, decimals)} unclaimed")
    print(_unbonding(after))


def withdraw(args: argparse.Namespace, client: EranosClient, member: Member, decimals: int) -> None:
    if member.status == MemberStatus.ACTIVE:
        raise SystemExit(f"eranos node: leave run {args.run_id} first ('eranos node leave'), then withdraw")
    if not member.stake:
        raise SystemExit(f"eranos node: {client.key} has no stake left in run {args.run_id}")
    try:
        amount = client.withdraw_stake(args.run_id)
    except ProgramError as exc:  # the chain's clock decides, not this machine's
        if exc.name == "StillUnbonding":
            raise SystemExit(f"eranos node: {_unbonding(member)}") from None
        raise
    print(f"withdrew {sol(amount)}; balance {sol(client.balance())}")


def run_audit(args: argparse.Namespace, client: EranosClient, member: Member, decimals: int) -> None:
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


HANDLERS = {"status": status, "claim": claim, "audit": run_audit, "leave": leave, "withdraw": withdraw}


def _unbonding(member: Member) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(member.unbond_at))
    return f"stake {sol(member.stake)} unbonding until {when} (chain time), then 'eranos node withdraw'"
