"""What `eranos sim` shows at the end: a short table per node, the run in a few lines, a verdict
that fails when a node never joined or never earned, and the PNGs (loss per node, bytes, where
the time went) beside summary.json."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from eranos.timeline import draw, load
from protocol.usage import USAGE, read_usage
from scripts.plotting import save_png, subplots


def problems(summary: dict) -> list[str]:
    """Why the run did not do what it should; empty when it did. Adversaries are expected to earn
    nothing and to be penalized; honest nodes must join, earn and agree on the model."""
    found = []
    for m in summary["members"]:
        if m["adversary"]:
            continue
        if m["status"] == "none":
            found.append(f"node {m['node']} never joined the run")
        elif m["points"] == 0:
            found.append(f"node {m['node']} joined but never earned a point")
        if m["penalties"]:
            found.append(f"honest node {m['node']} was penalized {m['penalties']} times")
    disagreed = [r for r, ok in summary["model_hash_agreement"].items() if not ok]
    if disagreed:
        found.append(f"members held different models after rounds {disagreed}")
    if summary["lost_batches"]:
        found.append(f"{summary['lost_batches']} batches lost")
    if not summary["chain_points_match_coordinator"]:
        found.append("points on chain differ from the coordinator's record")
    if summary["processes_exited_early"]:
        found.append(f"processes exited early: {', '.join(summary['processes_exited_early'])}")
    if summary.get("interrupted"):
        found.append("interrupted before the last round")
    return found


def node_table(summary: dict) -> Table:
    columns = ("node", "key", "role", "batches", "points", "tokens", "penalties", "compute", "status")
    table = Table(*columns, title="nodes")
    for m in summary["members"]:
        compute = m.get("compute_utilization")
        table.add_row(
            str(m["node"]), m["key"][:8], m["adversary"] or "honest", str(m["work_batches"]),
            str(m["points"]), str(m["tokens"]), str(m["penalties"]),
            "-" if compute is None else f"{compute:.0%}", m["status"],
        )  # fmt: skip
    return table


def run_lines(summary: dict) -> list[str]:
    losses = list(summary["loss_per_round"].values())
    loss = f"{losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "none verified"
    agreed = sum(summary["model_hash_agreement"].values())
    ratio = summary["compression_vs_dense_bf16"]
    return [
        f"rounds: {len(summary['rounds_recorded_on_chain'])} recorded on chain of {summary['rounds']}"
        + (" (overlapped)" if summary.get("overlap") else ""),
        f"verified loss: {loss}",
        f"bytes per node per step: {summary['bytes_per_node_per_step']:.0f}"
        + (f" ({ratio:.0f}x fewer than dense bf16)" if ratio else ""),
        f"model hash agreement: {agreed} of {len(summary['model_hash_agreement'])} rounds",
        "held-out loss: "
        + (", ".join(f"round {r} {v:.3f}" for r, v in summary.get("eval_loss_per_round", {}).items()) or "-"),
        f"lost batches: {summary['lost_batches']}, checks: "
        + ", ".join(f"{k} {v}" for k, v in summary["validation_checks"].items()),
        f"compute utilization (own batches' forward and backward / wall time): {_percent(summary)}",
        "start-up, mean over nodes: "
        + (", ".join(f"{k} {v:.1f} s" for k, v in summary.get("startup_seconds", {}).items()) or "-"),
        resources_line(summary.get("resources", {})),
        f"wall time: {summary['wall_seconds']:.0f} s",
    ]


def resources(out: Path, n_nodes: int, rounds: int) -> dict:
    """CPU, peak memory and gossip per process from the usage.json each wrote at exit (a killed
    process writes none and is left out); gossip counts are unique messages, per node per round."""
    coordinator = read_usage(out / USAGE) or {}
    nodes = [u for u in (read_usage(out / f"node-{i}" / USAGE) for i in range(n_nodes)) if u]
    per_round = max(1, rounds)

    by_type: dict[str, float] = {}
    for u in nodes:
        for kind, count in u["gossip_messages"].items():
            by_type[kind] = by_type.get(kind, 0.0) + count / len(nodes) / per_round

    def gossip(direction: str) -> float:
        return sum(v for k, v in by_type.items() if k.startswith(direction))

    rss = [u["peak_rss_mb"] for u in nodes]
    return {
        "coordinator_cpu_s": coordinator.get("cpu_s"),
        "coordinator_peak_rss_mb": coordinator.get("peak_rss_mb"),
        "nodes_reporting": len(nodes),
        "node_peak_rss_mb_mean": sum(rss) / len(rss) if rss else None,
        "node_peak_rss_mb_max": max(rss, default=None),
        "node_cpu_s_mean": sum(u["cpu_s"] for u in nodes) / len(nodes) if nodes else None,
        "gossip_received_per_node_per_round": gossip("received:"),
        "gossip_sent_per_node_per_round": gossip("sent:"),
        "gossip_per_node_per_round_by_type": dict(sorted(by_type.items())),
    }


def resources_line(r: dict) -> str:
    if not r.get("nodes_reporting"):
        return "resources: -"
    cpu = r["coordinator_cpu_s"]
    coordinator = "-" if cpu is None else f"{cpu:.0f} s"
    return (
        f"resources: coordinator CPU {coordinator}, node memory {r['node_peak_rss_mb_mean']:.0f} MB mean "
        f"{r['node_peak_rss_mb_max']:.0f} max, gossip per node per round "
        f"{r['gossip_received_per_node_per_round']:.1f} received, "
        f"{r['gossip_sent_per_node_per_round']:.1f} sent"
    )


def _percent(summary: dict) -> str:
    mean = summary.get("compute_utilization_mean")
    return "-" if mean is None else f"{mean:.0%} mean over nodes"


def report(summary: dict, out: Path, console: Console) -> None:
    console.print(node_table(summary))
    for line in run_lines(summary):
        console.print(line)
    found = problems(summary)
    verdict = "[green]PASS[/green]" if not found else "[red]FAIL[/red]: " + "; ".join(found)
    console.print(f"verdict: {verdict}")
    console.print(f"full summary, loss.png, loss_per_node.png, bytes.png, timeline.png in {out}")


def plot(summary: dict, out: Path) -> None:
    verified, claimed = summary["loss_per_round"], summary["self_reported_loss_per_round"]
    if verified or claimed:
        fig, ax = subplots(figsize=(6, 4))
        ax.plot(list(verified), list(verified.values()), marker="o", label="verified (validators' replays)")
        ax.plot(list(claimed), list(claimed.values()), ls="--", label="self-reported by members")
        held_out = summary.get("eval_loss_per_round", {})
        if held_out:
            ax.plot(list(held_out), list(held_out.values()), marker="s", label="held-out (eval split)")
        ax.legend()
        ax.set_xlabel("round")
        ax.set_ylabel("training loss of accepted contributions")
        ax.set_title(f"eranos sim: {summary['nodes']} nodes")
        save_png(fig, out / "loss.png")
    if summary["loss_per_node"]:
        fig, ax = subplots(figsize=(6, 4))
        for node, losses in summary["loss_per_node"].items():
            ax.plot(list(losses), list(losses.values()), marker=".", label=f"node {node}")
        ax.legend(fontsize=8)
        ax.set_xlabel("round")
        ax.set_ylabel("loss each node reported (accepted rounds)")
        save_png(fig, out / "loss_per_node.png")
    if summary["bytes_per_node_per_step"]:
        fig, ax = subplots(figsize=(5, 4))
        ax.bar(["payload", "dense bf16"], [summary["bytes_per_node_per_step"], summary["dense_bf16_bytes"]])
        ax.set_yscale("log")
        ax.set_ylabel("bytes per node per step")
        ax.set_title(f"{summary['compression_vs_dense_bf16']:.0f}x fewer bytes than dense bf16")
        save_png(fig, out / "bytes.png")
    events = load(out)
    if any(e.dur > 0 for evs in events.values() for e in evs):
        draw(events, out / "timeline.png")
