"""How a run holds together as it grows: `eranos sim` at several node counts on this machine,
one after another, and what each cost.

    .venv/bin/python scripts/bench_scale.py --nodes 4,8,16,32 --rounds 6 --plot docs/img/bench_scale.png

Each run is configs/sim.toml with at least one batch a round per node (global_batch = the node
count where that is more than the config's), so every node has work to earn by in every round.
Per node count: whether every node joined and earned (the sim's verdict), seconds from a node's
start to its first training (mean and slowest), wall seconds per round, the coordinator's CPU
seconds, peak memory per node, and unique gossip messages per node per round by type (from the
usage.json each process writes at exit, through the sim's summary). Exits 1 when any run's
verdict is not a pass.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eranos.timeline import load, startup  # noqa: E402
from protocol.run_config import dumps  # noqa: E402
from protocol.run_config import load as load_config  # noqa: E402
from scripts.sim_process import run_sim  # noqa: E402

CONFIG = ROOT / "configs" / "sim.toml"


def run_config(nodes: int, out: Path) -> Path:
    base = load_config(CONFIG)
    rounds = replace(base.rounds, global_batch=max(base.rounds.global_batch, nodes))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "scale.toml"
    path.write_text(dumps(replace(base, rounds=rounds)))
    return path


def run(nodes: int, rounds: int, out: Path, timeout: float) -> dict:
    args = ["--nodes", str(nodes), "--rounds", str(rounds), "--timeout", str(timeout)]
    summary = run_sim([*args, "--config", str(run_config(nodes, out))], out)
    if summary is None:
        return {"nodes": nodes, "verdict": f"no summary: see {out / 'sim.out'}"}
    return figures(summary, out)


def figures(summary: dict, out: Path) -> dict:
    events = load(out)
    phases = [e for e in events.get("coordinator", []) if e.name in ("training", "finalize")]
    recorded = max(1, len(summary["rounds_recorded_on_chain"]))
    span = max(e.t + e.dur for e in phases) - min(e.t for e in phases) if phases else 0.0
    firsts = [s["first training"] for name, evs in events.items() if name.startswith("node-")
              for s in [startup(evs)] if "first training" in s]  # fmt: skip
    r = summary.get("resources", {})
    earned = sum(1 for m in summary["members"] if m["points"] > 0)
    return {
        "nodes": summary["nodes"],
        "earned": earned,
        "verdict": summary["verdict"],
        "first_training_s_mean": sum(firsts) / len(firsts) if firsts else None,
        "first_training_s_max": max(firsts, default=None),
        "round_s": span / recorded,
        "coordinator_cpu_s": r.get("coordinator_cpu_s"),
        "node_peak_rss_mb_mean": r.get("node_peak_rss_mb_mean"),
        "gossip_received_per_node_per_round": r.get("gossip_received_per_node_per_round"),
        "gossip_by_type_per_node_per_round": r.get("gossip_per_node_per_round_by_type", {}),
        "wall_s": summary["wall_seconds"],
    }


def table(rows: list[dict]) -> str:
    head = "| nodes | earned | verdict | first training s (mean / max) | s per round | coordinator CPU s "
    head += "| node peak MB | gossip received per node per round | per node per second "
    head += "| Heartbeats received per node per round |"
    lines = [head, "|" + "---:|" * 10]
    for r in rows:
        if "earned" not in r:
            lines.append(f"| {r['nodes']} | - | FAIL ({r['verdict']}) |" + " - |" * 7)
            continue
        beats = r["gossip_by_type_per_node_per_round"].get("received:Heartbeat", 0.0)
        lines.append(
            f"| {r['nodes']} | {r['earned']} | {r['verdict'] if r['verdict'] == 'pass' else 'FAIL'} "
            f"| {_num(r['first_training_s_mean'])} / {_num(r['first_training_s_max'])} | {r['round_s']:.1f} "
            f"| {_num(r['coordinator_cpu_s'])} | {_num(r['node_peak_rss_mb_mean'], 0)} "
            f"| {_num(r['gossip_received_per_node_per_round'])} | {_num(per_second(r))} | {beats:.1f} |"
        )
    return "\n".join(lines)


def per_second(row: dict) -> float | None:
    """Gossip received per node per second of rounds: rounds grow longer with the run on these
    two cores, so a per-round count grows even where the rate stays flat."""
    received = row["gossip_received_per_node_per_round"]
    return None if received is None or not row["round_s"] else received / row["round_s"]


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def plot(rows: list[dict], path: Path) -> None:
    from scripts.plotting import save_png, subplots

    fig, axes = subplots(1, 3, figsize=(14, 4))
    rows = [r for r in rows if "earned" in r]
    n = [r["nodes"] for r in rows]
    axes[0].plot(n, [r["round_s"] for r in rows], "o-", label="seconds per round")
    axes[0].plot(
        n, [r["first_training_s_mean"] or 0 for r in rows], "s-", label="start to first training (mean)"
    )
    axes[0].set_title("time")
    kinds = sorted(
        {k for r in rows for k in r["gossip_by_type_per_node_per_round"] if k.startswith("received:")}
    )
    for kind in sorted(kinds):
        counts = [r["gossip_by_type_per_node_per_round"].get(kind, 0.0) for r in rows]
        axes[1].plot(n, counts, "o-", label=kind.removeprefix("received:"))
    axes[1].plot(n, [per_second(r) or 0 for r in rows], "k--", label="all, per second")
    axes[1].set_title("gossip messages received per node per round")
    axes[2].plot(n, [r["node_peak_rss_mb_mean"] or 0 for r in rows], "o-", label="node peak MB (mean)")
    axes[2].plot(n, [r["coordinator_cpu_s"] or 0 for r in rows], "s-", label="coordinator CPU s")
    axes[2].set_title("resources")
    for ax in axes:
        ax.set_xlabel("nodes")
        ax.legend(fontsize=7)
    save_png(fig, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", default="4,8,16", help="node counts, comma-separated")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--out", type=Path, default=ROOT / "out" / "scale")
    p.add_argument("--timeout", type=float, default=1200.0, help="seconds per run")
    p.add_argument("--plot", type=Path, help="write the figures as a PNG here")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = p.parse_args()
    rows = []
    for nodes in (int(n) for n in args.nodes.split(",")):
        print(f"{nodes} nodes x {args.rounds} rounds ...", file=sys.stderr, flush=True)
        rows.append(run(nodes, args.rounds, args.out / str(nodes), args.timeout))
        print(table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    print(json.dumps(rows, indent=1) if args.json else table(rows))
    if args.plot:
        plot(rows, args.plot)
    sys.exit(0 if all(r["verdict"] == "pass" for r in rows) else 1)


if __name__ == "__main__":
    main()
