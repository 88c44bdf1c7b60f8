"""Whole simulated runs against each adversary of the trust issue, beside an honest run of the
same length: who was penalized and when, points per accepted batch, honest members penalized,
the verified loss, and whether the run finished.

    python scripts/bench_adversaries.py                       # every scenario, 12 rounds
    python scripts/bench_adversaries.py --only "rubber stamp" --rounds 12 --json
    python scripts/bench_adversaries.py --markdown BENCHMARKS-adversaries.md --plot docs/img/adversaries.png

Every run uses configs/sim.toml (validation_rate 0.5, audit_rate 1.0, exact replay).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from solders.pubkey import Pubkey

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from coordinator.journal import decode_entry  # noqa: E402
from coordinator.state import VerdictSeen  # noqa: E402
from scripts.plotting import save_png, subplots  # noqa: E402
from scripts.sim import run_sim  # noqa: E402
from scripts.sim_args import parse_args  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Scenario:
    nodes: int
    flags: tuple[str, ...]


SCENARIOS = {
    "honest": Scenario(4, ()),
    "colluding pair (noise + accomplice)": Scenario(
        5, ("--adversary", "noise@1", "--adversary", "accomplice@2")
    ),
    "rubber stamp": Scenario(4, ("--adversary", "rubber-stamp@1")),
    "withholding its state from its validator": Scenario(4, ("--adversary", "withhold@1")),
    "serving nothing it commits": Scenario(4, ("--adversary", "serve-nothing@1")),
    "cheats when it hopes to be unchecked": Scenario(4, ("--adversary", "sometimes@1")),
    "late committer": Scenario(4, ("--adversary", "late@1")),
    "heartbeats, never trains": Scenario(4, ("--adversary", "idle@1")),
    "three identities of one operator": Scenario(
        6, ("--adversary", "sybil@3", "--adversary", "sybil@4", "--adversary", "sybil@5")
    ),
    "another's payload, one sign flipped": Scenario(4, ("--adversary", "near-copy@1")),
    "5% of signs flipped every round": Scenario(4, ("--adversary", "flip5@1")),
    "non-member forging the coordinator's messages": Scenario(4, ("--hostile",)),
    "honest payload restamped to the next step": Scenario(4, ("--adversary", "restamp@1")),
}


def final_loss(summary: dict, last: int = 3) -> float | None:
    """Mean verified loss over the last rounds that have one."""
    losses = list(summary["loss_per_round"].values())[-last:]
    return statistics.fmean(losses) if losses else None


def run(name: str, rounds: int, out: Path) -> dict:
    scenario = SCENARIOS[name]
    started = time.monotonic()
    argv = ["--nodes", str(scenario.nodes), "--rounds", str(rounds), "--out", str(out), *scenario.flags]
    try:
        summary = run_sim(parse_args(argv))
    except SystemExit as exc:  # the run stalled or a process failed: that is the finding
        return {"scenario": name, "nodes": scenario.nodes, "stalled": str(exc), "adversaries": []}
    members = summary["members"]
    honest = [m for m in members if not m["adversary"]]
    cheats = [m for m in members if m["adversary"]]
    covered = partner_accepts(out / "journal.jsonl", cheats)
    return {
        "scenario": name,
        "nodes": scenario.nodes,
        "rounds_finished": len(summary["model_hash_agreement"]),
        "seconds": round(time.monotonic() - started),
        "honest_penalized": [m["node"] for m in honest if m["penalties"]],
        "honest_audit_findings": [f for m in honest for f in m["audit_findings"]],
        "honest_points_per_batch": _mean([m["points_per_batch"] for m in honest]),
        "adversaries": [
            {
                "node": m["node"],
                "kind": m["adversary"],
                "penalized_in_round": (summary["penalized_rounds"].get(str(m["node"])) or [None])[0],
                "points": m["points"],
                "work_batches": m["work_batches"],
                "points_per_batch": m["points_per_batch"],
                "accepted_a_partner": covered[m["key"]],  # times it vouched for another adversary
            }
            for m in cheats
        ],
        "hostile_refused": summary.get("hostile_peer", {}).get("rejected_messages"),
        "final_verified_loss": final_loss(summary),
        "chain_points_match_coordinator": summary["chain_points_match_coordinator"],
        "lost_batches": summary["lost_batches"],
    }


def partner_accepts(journal: Path, cheats: list[dict]) -> Counter:
    """How often each adversary sent an accept for another adversary's contribution: the only
    dishonest act of an accomplice, which has none when it is never drawn to check a partner."""
    keys = {bytes(Pubkey.from_string(m["key"])): m["key"] for m in cheats}
    out = Counter()
    for line in journal.read_text().splitlines():
        _, event, _ = decode_entry(line)
        if isinstance(event, VerdictSeen) and event.accept and {event.validator, event.target} <= set(keys):
            out[keys[event.validator]] += 1
    return out


def _mean(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def markdown(rows: list[dict]) -> str:
    head = (
        "| scenario | nodes | rounds | adversary: penalized in round | adversary points/batch of work | "
        "honest points/batch | honest penalized | final verified loss |\n|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        if "stalled" in r:
            lines.append(f"| {r['scenario']} | {r['nodes']} | STALLED: {r['stalled']} | | | | | |")
            continue
        adv = r["adversaries"]
        penalized = ", ".join(f"{a['kind']}: {a['penalized_in_round']}" for a in adv) or "-"
        ppb = (
            ", ".join("-" if a["points_per_batch"] is None else f"{a['points_per_batch']:.2f}" for a in adv)
            or "-"
        )
        honest = "-" if r["honest_points_per_batch"] is None else f"{r['honest_points_per_batch']:.2f}"
        loss = "-" if r["final_verified_loss"] is None else f"{r['final_verified_loss']:.3f}"
        lines.append(
            f"| {r['scenario']} | {r['nodes']} | {r['rounds_finished']} | {penalized} | {ppb} | {honest} | "
            f"{len(r['honest_penalized'])} | {loss} |"
        )
    return head + "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    fig, ax = subplots(figsize=(8, 5))
    rows = [r for r in rows if "stalled" not in r]
    names = [r["scenario"] for r in rows]
    honest = [r["honest_points_per_batch"] or 0 for r in rows]
    cheat = [_mean([a["points_per_batch"] or 0 for a in r["adversaries"]]) or 0 for r in rows]
    ys = range(len(rows))
    ax.barh([y + 0.2 for y in ys], honest, height=0.4, label="honest members")
    ax.barh([y - 0.2 for y in ys], cheat, height=0.4, label="adversaries")
    ax.set_yticks(list(ys), names, fontsize=7)
    ax.set_xlabel("points per batch of work paid for (trained or replayed; 0: none)")
    ax.legend()
    fig.tight_layout()
    save_png(fig, path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", action="append", choices=sorted(SCENARIOS), help="run only these scenarios")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--out", type=Path, default=ROOT / "out" / "adversaries")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--markdown", type=Path, help="write the table here")
    p.add_argument("--plot", type=Path, help="write a PNG of points per batch here")
    args = p.parse_args(argv)
    rows = []
    for name in args.only or SCENARIOS:
        slug = "".join(c if c.isalnum() else "-" for c in name.split(" (")[0]).strip("-")
        rows.append(run(name, args.rounds, args.out / slug))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if args.markdown:
        args.markdown.write_text(markdown(rows))
    if args.plot:
        plot(rows, args.plot)
    print(json.dumps(rows, indent=2) if args.json else markdown(rows))


if __name__ == "__main__":
    main()
