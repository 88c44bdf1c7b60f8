"""Synchronous against overlapped rounds, side by side: the same `eranos sim` run in each mode,
one after the other, and how much of each node's time went to its own batches.

    .venv/bin/python scripts/bench_overlap.py                       # make sim's configuration
    .venv/bin/python scripts/bench_overlap.py --preset 20m --global-batch 24 --rounds 5

Per mode, from every node's event log: compute utilization (forward and backward on its own
batches over its time from its first such computation to its last event, as the sim reports
it), the share its worker was busy at all (training, replays, applies, syncs), and the bound
on utilization the checks leave (own compute over own compute plus replays: a replay is
another gradient on the target's batches, on the same device), with the wall time per round;
then where each training worker's time went (`breakdown`: its jobs, and its idle time by the
job it waited for). The last line is overlapped / synchronous utilization. Exits 1 when a
run's verdict is not a pass.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eranos.timeline import Event, load  # noqa: E402
from protocol.run_config import dumps  # noqa: E402
from protocol.run_config import load as load_config  # noqa: E402
from scripts.sim_process import run_sim  # noqa: E402

JOBS = ("train", "validate", "apply", "sync")  # the worker's jobs: whatever keeps the device busy


def run_config(args: argparse.Namespace, out: Path) -> Path:
    base = load_config(args.config)
    model = replace(base.model, preset=args.preset) if args.preset else base.model
    rounds = base.rounds
    if args.verdict_timeout:
        rounds = replace(rounds, verdict_timeout_s=args.verdict_timeout)
    if args.round_timeout:
        rounds = replace(rounds, round_timeout_s=args.round_timeout)
    if args.validation_rate is not None:
        rounds = replace(rounds, validation_rate=args.validation_rate)
    if args.global_batch:
        rounds = replace(rounds, global_batch=args.global_batch, weight_by_throughput=False)
    path = out / "run.toml"  # a config with relative data or model paths needs them made absolute
    path.write_text(dumps(replace(base, model=model, rounds=rounds)))
    return path


def run(args: argparse.Namespace, mode: str) -> dict:
    out = args.out / mode
    flags = ["--config", str(run_config(args, args.out)), "--overlap", mode, "--timeout", "1800"]
    summary = run_sim([*flags, "--nodes", str(args.nodes), "--rounds", str(args.rounds)], out)
    if summary is None:
        return {"mode": mode, "verdict": f"no summary: see {out / 'sim.out'}"}
    return analyse(mode, out, summary)


def analyse(mode: str, out: Path, summary: dict) -> dict:
    """One mode's figures from its sim's summary and the event logs under `out`."""
    events = load(out)
    logs = [evs for name, evs in sorted(events.items()) if name.startswith("node-")]
    logs = [evs for evs in logs if any(e.name == "compute" for e in evs)]
    nodes = [shares(evs) | {"worker": breakdown(evs, mode == "on")} for evs in logs]
    recorded = len(summary["rounds_recorded_on_chain"])
    return {
        "mode": mode,
        "verdict": summary["verdict"],
        "wall_s": summary["wall_seconds"],
        "s_per_round": round_seconds(events.get("coordinator", []), recorded),
        "nodes": nodes,
        "checked": summary["validation_checks"].get("replay accepted", 0),
        "held_out": list(summary["eval_loss_per_round"].values())[-1:] or None,
        **{k: sum(n[k] for n in nodes) / len(nodes) for k in ("utilization", "busy", "bound")},
    }


def shares(evs: list[Event]) -> dict:
    compute = [e for e in evs if e.name == "compute"]
    start, end = min(e.t for e in compute), max(e.t + e.dur for e in evs)
    span = end - start
    own = sum(e.dur for e in compute)
    replays = sum(e.dur for e in evs if e.name == "validate")
    busy = sum(max(0.0, min(e.t + e.dur, end) - max(e.t, start)) for e in evs if e.name in JOBS)
    return {"utilization": own / span, "busy": min(1.0, busy / span), "bound": own / (own + replays)}


def breakdown(evs: list[Event], replays_beside: bool) -> dict[str, float]:
    """Each node's training worker's time from its first own computation, as shares that sum
    to 1: its own forward and backward, the rest of its train jobs (compress, serving the
    state), applies, syncs, replays (when they run on this worker: synchronous rounds), and
    its idle time by what ended it: the next train job (waiting for a round to start), the next
    apply (waiting for a round to end), or nothing (after its last job)."""
    on_worker = {"train", "apply", "sync"} | (set() if replays_beside else {"validate"})
    compute = [e for e in evs if e.name == "compute"]
    start, end = min(e.t for e in compute), max(e.t + e.dur for e in evs)
    jobs = sorted((e for e in evs if e.name in on_worker and e.t + e.dur > start), key=lambda e: e.t)
    own = sum(e.dur for e in compute)
    out = {"compute": own, "train rest": sum(e.dur for e in jobs if e.name == "train") - own}
    for name in ("apply", "sync", "validate"):
        out[name] = sum(e.dur for e in jobs if e.name == name)
    waits = {"wait train": 0.0, "wait apply": 0.0, "wait validate": 0.0, "wait sync": 0.0}
    at = start
    for e in jobs:
        waits[f"wait {e.name}"] += max(0.0, e.t - at)
        at = max(at, e.t + e.dur)
    span = end - start
    out |= waits | {"tail": max(0.0, end - at)}
    return {k: v / span for k, v in out.items()}


def round_seconds(coordinator: list[Event], recorded: int) -> float:
    phases = [e for e in coordinator if e.name in ("training", "finalize", "cooldown")]
    if not phases or not recorded:
        return 0.0
    return (max(e.t + e.dur for e in phases) - min(e.t for e in phases)) / recorded


def table(rows: list[dict]) -> str:
    lines = [
        "| rounds | verdict | wall s | s per round | compute utilization (mean, min-max) "
        "| worker busy | bound from replays | replays accepted | held-out loss |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "nodes" not in r:
            lines.append(f"| {r['mode']} | FAIL ({r['verdict']}) |" + " - |" * 7)
            continue
        low, high = min(n["utilization"] for n in r["nodes"]), max(n["utilization"] for n in r["nodes"])
        lines.append(
            f"| {_label(r)} | {r['verdict']} | {r['wall_s']:.0f} "
            f"| {r['s_per_round']:.1f} | {r['utilization']:.1%} ({low:.0%}-{high:.0%}) | {r['busy']:.0%} "
            f"| {r['bound']:.0%} | {r['checked']} | {_loss(r['held_out'])} |"
        )
    return "\n".join(lines)


def worker_table(rows: list[dict]) -> str:
    """Where each mode's training worker's time went, averaged over its nodes."""
    done = [r for r in rows if "nodes" in r]
    if not done:
        return ""
    keys = list(done[0]["nodes"][0]["worker"])
    lines = ["| rounds | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for r in done:
        mean = _worker_mean(r)
        lines.append(f"| {_label(r)} | " + " | ".join(f"{mean[k]:.1%}" for k in keys) + " |")
    return "\n".join(lines)


def _label(row: dict) -> str:
    return "overlapped" if row["mode"] == "on" else "synchronous"


def _worker_mean(row: dict) -> dict[str, float]:
    """A mode's training-worker shares (`breakdown`), averaged over its nodes."""
    nodes = row["nodes"]
    return {k: sum(n["worker"][k] for n in nodes) / len(nodes) for k in nodes[0]["worker"]}


def _loss(values: list[float] | None) -> str:
    return f"{values[0]:.3f}" if values else "-"


def plot(rows: list[dict], path: Path) -> None:
    """Per-node utilization, and where each mode's training worker's time went."""
    from scripts.plotting import save_png, subplots

    fig, (ax, parts) = subplots(1, 2, figsize=(12, 4))
    done = [r for r in rows if "nodes" in r]
    for i, r in enumerate(done):
        xs = [j + 0.4 * i for j in range(len(r["nodes"]))]
        ax.bar(xs, [100 * n["utilization"] for n in r["nodes"]], width=0.4, label=_label(r))
    ax.set_xticks([j + 0.2 for j in range(len(done[0]["nodes"]))] if done else [])
    ax.set_xticklabels([str(j) for j in range(len(done[0]["nodes"]))] if done else [])
    ax.set_xlabel("node")
    ax.set_ylabel("compute utilization, %")
    ax.set_title("own batches' forward and backward / wall time")
    ax.legend(loc="lower right")
    _plot_breakdown(parts, done)
    save_png(fig, path)


def _plot_breakdown(ax, rows: list[dict]) -> None:
    if not rows:
        return
    labels, means = [_label(r) for r in rows], [_worker_mean(r) for r in rows]
    keys = [k for k in means[0] if any(m[k] for m in means)]
    bottom = [0.0] * len(rows)
    for key in keys:
        shares = [100 * m[key] for m in means]
        ax.bar(labels, shares, bottom=bottom, label=key)
        bottom = [b + v for b, v in zip(bottom, shares)]
    ax.set_ylabel("share of the training worker's time, %")
    ax.set_title("where the training worker's time went (mean over nodes)")
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1, 0.5))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "sim.toml")
    p.add_argument("--preset", help="the model preset instead of the config's")
    p.add_argument("--global-batch", type=int, help="batches per round (throughput weighting off)")
    p.add_argument(
        "--verdict-timeout",
        type=float,
        help="seconds a replay may take (one beside training takes longer)",
    )
    p.add_argument("--round-timeout", type=float, help="seconds a round may take (more batches need more)")
    p.add_argument("--validation-rate", type=float, help="share of contributions replayed")
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--out", type=Path, default=ROOT / "out" / "bench_overlap")
    p.add_argument("--plot", type=Path, help="write the per-node utilization as a PNG here")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    args.out, args.config = args.out.resolve(), args.config.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [run(args, mode) for mode in ("off", "on")]
    print(json.dumps(rows, indent=1) if args.json else f"{table(rows)}\n\n{worker_table(rows)}")
    if all("nodes" in r for r in rows):
        ratio = rows[1]["utilization"] / rows[0]["utilization"]
        print(f"overlapped / synchronous compute utilization: {ratio:.2f}")
    if args.plot:
        plot(rows, args.plot)
    return 0 if all(r["verdict"] == "pass" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
