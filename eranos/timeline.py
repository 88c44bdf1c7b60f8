"""`eranos timeline DIR`: where a run's time went, from the event logs its processes wrote.

    eranos timeline out/sim                   # out/sim/timeline.png and a table on stdout
    eranos timeline out/sim -o rounds.png

Reads every `*events.jsonl` under DIR (protocol/events.py), draws one row per process with a bar
per span (the coordinator's phases, each node's train / validate / apply / sync jobs) against
seconds since the first event, and prints each process's time per kind of span.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from protocol.console import HelpFormatter, Parser
from protocol.events import Event, read_events

COLOURS = {
    "waiting": "#bbbbbb", "warmup": "#f2c14e", "training": "#4e79a7", "finalize": "#f28e2b",
    "cooldown": "#76b7b2", "paused": "#999999", "train": "#1f3b73", "validate": "#e15759",
    "apply": "#59a14f", "sync": "#b07aa1", "compute": "#9c755f",
}  # fmt: skip


def load(directory: Path) -> dict[str, list[Event]]:
    by_process: dict[str, list[Event]] = defaultdict(list)
    for path in sorted(directory.rglob("*events.jsonl")):
        for event in read_events(path):
            by_process[event.process].append(event)
    return dict(sorted(by_process.items(), key=lambda item: (item[0] != "coordinator", item[0])))


def totals(events: dict[str, list[Event]]) -> dict[str, dict[str, float]]:
    """Seconds each process spent in each kind of span."""
    out: dict[str, dict[str, float]] = {}
    for process, evs in events.items():
        spent: dict[str, float] = defaultdict(float)
        for e in evs:
            spent[e.name] += e.dur
        out[process] = dict(spent)
    return out


def utilization(evs: list[Event]) -> float | None:
    """Share of a process's time from its first own-batch computation to its last event spent
    computing (forward and backward on its own batches: the 'compute' spans)."""
    compute = [e for e in evs if e.name == "compute"]
    if not compute:
        return None
    start, end = min(e.t for e in compute), max(e.t + e.dur for e in evs)
    return sum(e.dur for e in compute) / (end - start) if end > start else None


def startup(evs: list[Event]) -> dict[str, float]:
    """Seconds of each start-up stage of a node, and from its process start to its first
    training ('first training')."""
    stages = {e.name.removeprefix("start-up: "): e.dur for e in evs if e.name.startswith("start-up: ")}
    starts = [e.t for e in evs if e.name.startswith("start-up: ")]
    trains = [e.t for e in evs if e.name == "train"]
    if starts and trains:
        stages["first training"] = min(trains) - min(starts)
    return stages


def draw(events: dict[str, list[Event]], path: Path) -> None:
    from scripts.plotting import save_png, subplots

    t0 = min(e.t for evs in events.values() for e in evs)
    fig, ax = subplots(figsize=(12, 1.5 + 0.5 * len(events)))
    for row, evs in enumerate(reversed(events.values())):
        for e in evs:
            if e.dur > 0:
                ax.broken_barh([(e.t - t0, e.dur)], (row - 0.4, 0.8), color=COLOURS.get(e.name, "#444444"))
    for e in events.get("coordinator", []):
        if e.name == "training":
            ax.axvline(e.t - t0, color="#888888", linewidth=0.5)
            ax.text(e.t - t0, len(events) - 0.4, f"r{e.round}", fontsize=7)
    ax.set_yticks(range(len(events)), list(reversed(events)))
    ax.set_xlabel("seconds since the first event")
    names = sorted({e.name for evs in events.values() for e in evs if e.dur > 0})
    handles = [ax.bar(0, 0, color=COLOURS.get(n, "#444444"), label=n) for n in names]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    ax.set_title("where the run's time went", pad=14)
    save_png(fig, path)


def table(spent: dict[str, dict[str, float]]) -> Table:
    names = sorted({n for s in spent.values() for n in s})
    t = Table("process", *names, title="seconds per kind of span")
    for process, s in spent.items():
        t.add_row(process, *(f"{s[n]:.1f}" if n in s else "" for n in names))
    return t


def main(argv: list[str] | None = None, prog: str = "eranos timeline") -> None:
    p = Parser(prog=prog, description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("directory", type=Path, help="a run's directory (e.g. out/sim)")
    p.add_argument("-o", "--output", type=Path, help="the PNG to write (default: DIRECTORY/timeline.png)")
    args = p.parse_args(argv)
    events = load(args.directory)
    if not any(e.dur > 0 for evs in events.values() for e in evs):
        raise SystemExit(f"{prog}: no events under {args.directory} (processes write *events.jsonl)")
    output = args.output or args.directory / "timeline.png"
    draw(events, output)
    Console(width=200).print(table(totals(events)))
    print(f"wrote {output}")
