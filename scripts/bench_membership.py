"""What a run of 256 or 1024 members costs the coordinator and each member's gossip, beyond what
this machine holds as processes: the real coordinator round machine driven by N honest members
on a fake clock (no torch, no sockets), every message sealed as it would go on the wire.

    .venv/bin/python scripts/bench_membership.py --members 16,64,256,1024 --rounds 3

Per member count and round, measured: the round machine's CPU time for every event of a round
(joins excluded), and the wire size of every message. Derived from the star relay (the
coordinator relays each run-topic message to every member; heartbeats and verdicts go to the
coordinator's own topic and no further, p2p/topics.py): the messages and bytes each member
receives per round, and what the coordinator receives and sends. RunInfo, which the coordinator
sends every RUN_INFO_EVERY_S with the round's RoundStart and the last RoundEnd again, is counted
per round at the round length given by --round-s.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from coordinator.machine import step  # noqa: E402
from coordinator.service import RUN_INFO_EVERY_S  # noqa: E402
from coordinator.state import (  # noqa: E402
    CommitSeen,
    HeartbeatSeen,
    JoinRequest,
    PayloadChecked,
    Publish,
    Seeded,
    State,
    VerdictSeen,
)
from node.machine import HEARTBEAT_S  # noqa: E402
from p2p.identity import Identity  # noqa: E402
from p2p.messages import (  # noqa: E402
    Commit,
    Join,
    Recheck,
    Reveal,
    RoundEnd,
    RoundStart,
    RunInfo,
    Verdict,
    seal,
)
from p2p.topics import FOR_COORDINATOR  # noqa: E402
from protocol.run_config import RoundsSection, dumps, load  # noqa: E402

RUN = "eranos-scale"
COORDINATOR, MEMBER = Identity.from_seed(b"\x01" * 32), Identity.from_seed(b"\x02" * 32)


def digest(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


def wire(identity: Identity, message) -> int:
    return len(seal(identity, RUN, 2**62, message))


@dataclass
class Tally:
    """Messages on the wire in one round: (type, bytes) as the coordinator publishes them, and
    what members publish."""

    coordinator: list[tuple[str, int]] = field(default_factory=list)
    members: list[tuple[str, int]] = field(default_factory=list)
    machine_s: float = 0.0


class Run:
    """N honest members and the coordinator's round machine, on a fake clock."""

    def __init__(self, config: RoundsSection, keys: list[bytes]) -> None:
        self.keys, self.now, self.tally = keys, 0.0, Tally()
        self.state = State(config)
        self.published: list = []
        self.send(Seeded(b"\x07" * 32))
        for k in keys:
            self.send(JoinRequest(k, ("/ip4/10.0.0.1/tcp/4002",), b"\x00" * 32))
            self.send(HeartbeatSeen(k, -1, b"\x00" * 32))

    def send(self, event) -> None:
        started = time.process_time()
        result = step(self.state, event, self.now)
        self.tally.machine_s += time.process_time() - started
        self.state = result.state
        for effect in result.effects:
            if isinstance(effect, Publish):
                self.published.append(effect.message)
                self.tally.coordinator.append(
                    (type(effect.message).__name__, wire(COORDINATOR, effect.message))
                )

    def member_says(self, message) -> None:
        self.tally.members.append((type(message).__name__, wire(MEMBER, message)))

    def latest(self, kind):
        return next(m for m in reversed(self.published) if isinstance(m, kind))

    def round(self, number: int) -> Tally:
        """One honest round from its RoundStart to the next; returns what it cost."""
        self.tally, self.now = Tally(), self.now + 1.0
        start = self.latest(RoundStart)
        model = start.model_hash
        for k in start.batches:
            payload, after = digest(number, k, "payload"), digest(number, k, "state")
            self.member_says(Commit(number, payload, 2000, model, 4.0, bytes(32), after))
            self.send(CommitSeen(k, number, payload, 2000, model, 4.0, bytes(32), after))
            self.send(PayloadChecked(k, number, True))
        self.now += 1.0
        self.send(None)
        self.answer(number, self.latest(Reveal).validators.items())
        answered = 0
        for _ in range(3):  # a round settles within three rounds of verdicts
            self.now += 1.0
            self.send(None)
            rechecks = [m for m in self.published if isinstance(m, Recheck) and m.round == number]
            for m in rechecks[answered:]:
                self.answer(number, [(v, t) for t, vs in m.assignments.items() for v in vs])
            if len(rechecks) == answered:
                break
            answered = len(rechecks)
        end = self.latest(RoundEnd)
        if end.round != number or len(end.accepted) != len(start.batches):
            raise RuntimeError(f"round {number} did not settle with every contribution accepted")
        new_model = digest(number, "model")
        for k in self.keys:
            self.send(HeartbeatSeen(k, number, new_model))
        self.now += 1.0
        self.send(None)
        return self.tally

    def answer(self, number: int, checks) -> None:
        for validator, target in checks:
            evidence = digest(number, target, "evidence")
            self.member_says(Verdict(number, target, True, 1.0, True, evidence, 4.0))
            self.send(VerdictSeen(validator, number, target, True, 1.0, True, evidence, 4.0))


def measure(n: int, rounds: int, round_s: float, base) -> dict:
    keys = [hashlib.sha256(i.to_bytes(4, "little")).digest() for i in range(n)]
    config = replace(base.rounds, min_nodes=n, start_nodes=0, rounds=rounds + 2, global_batch=2 * n)
    run = Run(config, keys)
    run.now += 1.0
    run.send(None)  # warmup: every member already holds the model
    tallies = [run.round(r) for r in range(rounds)]
    info = wire(COORDINATOR, RunInfo(dumps(base), 0, "training", 0, bytes(32), 0, n, n))
    # a round's RoundStart and RoundEnd go out again with each RunInfo while a member has not
    # acted on them (coordinator/service.py): never in these honest rounds, all round long with
    # a straggler that neither commits nor applies
    again = wire(COORDINATOR, run.latest(RoundStart)) + wire(COORDINATOR, run.latest(RoundEnd))
    join = wire(MEMBER, Join(["/ip4/10.0.0.1/tcp/4002/p2p/" + "x" * 52], "NVIDIA H200"))
    return summarize(n, tallies, info, again, round_s / RUN_INFO_EVERY_S, round_s) | {"join_bytes": join}


def summarize(n: int, tallies: list[Tally], info: int, again: int, infos: float, round_s: float) -> dict:
    per = len(tallies)
    coordinator = [x for t in tallies for x in t.coordinator]
    members = [x for t in tallies for x in t.members]
    relayed = [x for x in members if x[0] not in {c.__name__ for c in FOR_COORDINATOR}]
    heartbeats = n * round_s / HEARTBEAT_S  # every member's, to the coordinator's topic only
    once = (sum(b for _, b in coordinator) + sum(b for _, b in relayed)) / per
    received_bytes = once + infos * info
    largest = max(coordinator, key=lambda x: x[1])
    return {
        "members": n,
        "machine_cpu_s_per_round": sum(t.machine_s for t in tallies) / per,
        "member_received_msgs_per_round": (len(coordinator) + len(relayed)) / per + infos,
        "member_received_kb_per_round": received_bytes / 1024,
        "member_sent_msgs_per_round": (len(members) / per + heartbeats) / n,
        "coordinator_received_msgs_per_round": len(members) / per + heartbeats,
        "coordinator_sent_mb_per_round": n * received_bytes / 2**20,
        "coordinator_sent_mb_per_round_straggler": n * (received_bytes + infos * again) / 2**20,
        "largest_message": f"{largest[0]} {largest[1] / 1024:.1f} KB",
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| members | round machine CPU s per round | per member: messages / KB received per round "
        "| per member: messages sent per round | coordinator: messages received per round "
        "| coordinator: MB sent per round (with a straggler all round) | largest message |",
        "|" + "---:|" * 6 + "---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['members']} | {r['machine_cpu_s_per_round']:.3f} "
            f"| {r['member_received_msgs_per_round']:.0f} / {r['member_received_kb_per_round']:.0f} "
            f"| {r['member_sent_msgs_per_round']:.1f} | {r['coordinator_received_msgs_per_round']:.0f} "
            f"| {r['coordinator_sent_mb_per_round']:.1f} "
            f"({r['coordinator_sent_mb_per_round_straggler']:.1f}) "
            f"| {r['largest_message']} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    from scripts.plotting import save_png, subplots

    fig, axes = subplots(1, 3, figsize=(14, 4))
    n = [r["members"] for r in rows]
    axes[0].loglog(n, [r["machine_cpu_s_per_round"] for r in rows], "o-")
    axes[0].set_title("round machine CPU s per round")
    axes[1].loglog(n, [r["member_received_kb_per_round"] for r in rows], "o-", label="KB received")
    axes[1].loglog(n, [r["member_received_msgs_per_round"] for r in rows], "s-", label="messages received")
    axes[1].set_title("each member's gossip per round")
    axes[2].loglog(n, [r["coordinator_sent_mb_per_round"] for r in rows], "o-")
    axes[2].set_title("coordinator MB sent per round (star relay)")
    for ax in axes:
        ax.set_xlabel("members")
    axes[1].legend(fontsize=7)
    save_png(fig, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--members", default="16,64,256,1024", help="member counts, comma-separated")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--round-s", type=float, default=20.0, help="round length for RunInfo and heartbeats")
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "sim.toml")
    p.add_argument("--plot", type=Path, help="write the figures as a PNG here")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    base = load(args.config)
    rows = []
    for n in (int(x) for x in args.members.split(",")):
        rows.append(measure(n, args.rounds, args.round_s, base))
        print(f"{n} members measured", file=sys.stderr, flush=True)
    print(json.dumps(rows, indent=1) if args.json else table(rows))
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
