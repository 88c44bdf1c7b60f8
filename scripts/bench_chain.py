"""Compute units and transaction sizes of every eranos instruction, in LiteSVM.

Each instruction is sent for real (not simulated) through the client's builders against the
committed chain/program/eranos.so; compute units come from the runtime's metering. `record_round`
is measured at 16, 256 and 1024 members with half the members contributing (one batch count byte
each) and the other half validating, and with every member validating and as many contributing
as one transaction holds (goal: one transaction of at most 1232 bytes and <= 200k CU at 1024
members), and
`join` at the table's end, where the member search is longest.

    python scripts/bench_chain.py --plot docs/img/bench_chain.png
    python scripts/bench_chain.py --json
"""

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import track
from rich.table import Table
from solders.keypair import Keypair

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chain import instructions as ixs  # noqa: E402
from chain.client import EranosClient, SvmTransport  # noqa: E402
from chain.state import Mode, RunParams  # noqa: E402
from chain.svm import ProgramSvm  # noqa: E402
from scripts.plotting import save_png, subplots  # noqa: E402

SOL = 10**9
CU_GOAL = 200_000
TX_LIMIT = 1232
MAX_CONTRIBUTORS_AT_1024 = 547  # contributors one record_round transaction holds at 1024 members (1232 B)


class Meter:
    """Sends through one ProgramSvm and records (units, bytes) per labelled transaction."""

    def __init__(self) -> None:
        self.svm = ProgramSvm()
        self.transport = SvmTransport(self.svm)
        self.rows: list[dict] = []

    def client(self, lamports: int = SOL, authority: EranosClient | None = None) -> EranosClient:
        """A funded key, addressing `authority`'s runs (its own by default)."""
        c = EranosClient(self.transport, Keypair(), authority=authority.key if authority else None)
        c.airdrop(lamports)
        return c

    def measure(self, label: str, client: EranosClient, instructions, signers=(), **extra) -> dict:
        tx = client.transaction(instructions, signers)
        outcome = self.svm.process(tx)
        if outcome.err is not None:
            raise RuntimeError(f"{label}: {outcome.err}\n" + "\n".join(outcome.logs))
        eranos = [line for line in outcome.logs if ixs.PROGRAM_ID.__str__() in line and "consumed" in line]
        units = int(eranos[-1].split(" consumed ")[1].split(" of ")[0]) if eranos else outcome.units
        row = {
            "instruction": label,
            "compute_units": units,
            "tx_units": outcome.units,
            "tx_bytes": len(bytes(tx)),
        }
        self.rows.append(row | extra)
        return row


def single_instructions(m: Meter, run_id: int) -> None:
    a = m.client(100 * SOL)
    table, mint = Keypair(), Keypair()
    run_key, _ = ixs.run_address(run_id, a.key)
    params = RunParams(10, 2, required_stake=SOL // 10, slash_amount=SOL // 10, unbonding_seconds=60)
    m.measure(
        "initialize_run (+ table and mint creation)",
        a,
        [
            ixs.create_member_table(a.key, table.pubkey(), m.svm.rent_exempt_minimum(ixs.MEMBER_TABLE_SIZE)),
            *ixs.create_mint(a.key, mint.pubkey(), m.svm.rent_exempt_minimum(82), run_key, 0),
            ixs.initialize_run(a.key, run_id, table.pubkey(), mint.pubkey(), Mode.PERMISSIONED, params),
        ],
        [table, mint],
    )
    run = a.run(run_id)
    m.measure("update_run", a, [ixs.update_run(a.key, run.address, params, False)])
    node = m.client(authority=a)
    m.measure("authorize_node", a, [ixs.authorize_node(a.key, run, node.key)])
    m.measure("join (permissioned)", node, [ixs.join(node.key, run)])
    run = a.run(run_id)
    m.measure("record_round (1 member)", a, [a.record_round_instruction(run, 1, bytes(32), [0], [0], [])])
    m.measure("claim (+ token account creation)", node, ixs.claim(node.key, run, 12))
    m.measure("leave", node, [ixs.leave(node.key, run)])
    m.measure("revoke_node", a, [ixs.revoke_node(a.key, run, node.key)])

    other = m.client(100 * SOL)
    other.create_run(run_id + 1, Mode.PERMISSIONLESS, params)
    staker = m.client(authority=other)
    run2 = other.run(run_id + 1)
    m.measure("join (permissionless, stake deposit)", staker, [ixs.join(staker.key, run2)])
    staker.leave(run_id + 1)
    m.svm.set_time(int(time.time()) + params.unbonding_seconds + 1)  # the unbonding period passes
    m.measure("withdraw_stake", staker, [ixs.withdraw_stake(staker.key, run2)])
    m.svm.set_time(None)


def record_round_at(m: Meter, run_id: int, members: int) -> None:
    a = m.client(100 * SOL)
    a.create_run(run_id, Mode.PERMISSIONLESS, RunParams(10, 2))
    run = a.run(run_id)
    nodes = [m.client(SOL // 100, authority=a) for _ in range(members)]
    for i, node in enumerate(track(nodes, description=f"{members} members joining", transient=True)):
        if i == members - 1:
            m.measure(f"join (slot {i}: longest search)", node, [ixs.join(node.key, run)], members=members)
        else:
            m.svm.process(node.transaction([ixs.join(node.key, run)]))
    run = a.run(run_id)
    half_c, half_v = range(0, members, 2), range(1, members, 2)
    m.measure(
        f"record_round ({members} members, half the bits set)",
        a,
        [a.record_round_instruction(run, 1, bytes(32), half_c, half_v, [])],
        members=members,
    )
    everyone, fits = range(members), min(members, MAX_CONTRIBUTORS_AT_1024)
    m.measure(
        f"record_round ({members} members, every bit validated, {fits} contributing 255 batches)",
        a,
        [a.record_round_instruction(run, 2, bytes(32), dict.fromkeys(range(fits), 255), everyone, [])],
        members=members,
    )


def plot(rows: list[dict], path: Path) -> None:
    fig, ax = subplots(figsize=(6, 4))
    for kind, marker in (("half the bits", "o"), ("every bit validated", "s")):
        pts = [
            (r["members"], r["compute_units"])
            for r in rows
            if "record_round" in r["instruction"] and kind in r["instruction"]
        ]
        ax.plot(*zip(*pts), marker=marker, label=f"record_round, {kind} set")
    joins = [(r["members"], r["compute_units"]) for r in rows if "longest search" in r["instruction"]]
    ax.plot(*zip(*joins), marker="^", label="join at the last slot")
    ax.axhline(CU_GOAL, color="red", linestyle="--", label="goal: 200k CU")
    ax.set_xlabel("members in the table")
    ax.set_ylabel("compute units")
    ax.set_title("eranos program cost (LiteSVM)")
    ax.legend()
    save_png(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--members", type=int, nargs="+", default=[16, 256, 1024])
    parser.add_argument(
        "--plot", type=Path, help="write record_round's compute units against members as a PNG"
    )
    args = parser.parse_args()
    m = Meter()
    single_instructions(m, 1)
    for i, n in enumerate(args.members):
        record_round_at(m, 100 + i, n)
    largest = [r for r in m.rows if r.get("members") == max(args.members) and "half" in r["instruction"]]
    summary = {
        "rows": m.rows,
        "goal": {"members": max(args.members), "cu_limit": CU_GOAL, "tx_limit": TX_LIMIT},
        "goal_met": bool(largest)
        and largest[0]["compute_units"] <= CU_GOAL
        and largest[0]["tx_bytes"] <= TX_LIMIT,
    }
    if args.plot:
        plot(m.rows, args.plot)
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    table = Table(title="eranos program: compute units and transaction size (LiteSVM)")
    for col in ("instruction", "program CU", "transaction CU", "tx bytes"):
        table.add_column(col, justify="left" if col == "instruction" else "right")
    for r in m.rows:
        table.add_row(r["instruction"], f"{r['compute_units']:,}", f"{r['tx_units']:,}", str(r["tx_bytes"]))
    console = Console()
    console.print(table)
    console.print(
        f"goal (one tx <= {TX_LIMIT} B, <= {CU_GOAL:,} CU at {max(args.members)} members): "
        f"{'met' if summary['goal_met'] else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
