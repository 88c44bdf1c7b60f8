"""How long a coordinator takes to restart from its journal, for runs of different lengths.

Drives the real round machine through its journal for N rounds (two members, every round
committed, checked and reported), closes it, and times `Journal.open`: with snapshots every
`--snapshot-every` rounds the restart replays one snapshot and the lines after it, so its time
should not grow with N. Each restart is timed 7 times (median). Runs in a temporary directory
(tmpfs when /dev/shm exists).

    python scripts/bench_journal.py --rounds 10 10000 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from coordinator.journal import Journal  # noqa: E402
from coordinator.state import CommitSeen, HeartbeatSeen, JoinRequest, PayloadChecked, Seeded, State  # noqa: E402
from protocol.run_config import RoundsSection  # noqa: E402

A, B, H = bytes([1]) * 32, bytes([2]) * 32, bytes([16]) * 32
REPEATS = 7  # restarts timed per run length; the median is reported
CONFIG = RoundsSection(min_nodes=2, global_batch=4, validation_rate=0.0, heartbeat_timeout_s=1e9)


def write_run(path: Path, rounds: int, snapshot_every: int) -> None:
    journal, _ = Journal.open(path, State(replace(CONFIG, rounds=rounds + 1), model_hash=H), snapshot_every)
    now = 0.0
    journal.step(Seeded(bytes(range(32))), now)
    for key in (A, B):
        journal.step(JoinRequest(key, (), H), now)
    for number in range(rounds):
        for key in (A, B):
            journal.step(CommitSeen(key, number, bytes([number % 256, key[0]]) * 16, 10, H, 2.0), now + 1)
        for key in (A, B):
            journal.step(PayloadChecked(key, number, True), now + 2)
        for key in (A, B):
            journal.step(HeartbeatSeen(key, number, H), now + 3)
        now += 10
    journal.close()


def measure(rounds: int, snapshot_every: int, root: Path) -> dict:
    path = root / f"journal-{rounds}.jsonl"
    started = time.perf_counter()
    write_run(path, rounds, snapshot_every)
    written = time.perf_counter() - started
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        journal, _ = Journal.open(
            path, State(replace(CONFIG, rounds=rounds + 1), model_hash=H), snapshot_every
        )
        times.append(time.perf_counter() - started)
        assert journal.state.finalized_rounds == rounds, journal.state.finalized_rounds
        journal.close()
    restart = statistics.median(times)
    return {
        "rounds": rounds,
        "restart_s": restart,
        "write_s": written,
        "journal_lines": len(path.read_text().splitlines()),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, nargs="+", default=[10, 10_000])
    p.add_argument("--snapshot-every", type=int, default=50)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(dir=base) as d:
        rows = [measure(n, args.snapshot_every, Path(d)) for n in args.rounds]
    ratio = rows[-1]["restart_s"] / rows[0]["restart_s"]
    out = {"rows": rows, "restart_ratio_longest_to_shortest": ratio}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for r in rows:
        lines = r["journal_lines"]
        print(f"{r['rounds']:>6} rounds: restart {r['restart_s'] * 1000:.1f} ms ({lines} journal lines)")
    print(f"restart time, {rows[-1]['rounds']} rounds / {rows[0]['rounds']} rounds: {ratio:.2f}x")


if __name__ == "__main__":
    main()
