"""What a finished `eranos sim` run did, read from the coordinator's journal, the chain and the
nodes' logs: the summary the report prints and the verdict judges (scripts/sim_report.py)."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path

from solders.keypair import Keypair

from chain.client import EranosClient
from coordinator.journal import Journal, decode_entry
from coordinator.rounds import in_flight
from coordinator.service import initial_state
from coordinator.state import HeartbeatSeen, Publish, RecordRound, VerdictSeen
from eranos import timeline
from node.audit import audit, read_log
from node.outputs import EVALS
from p2p.messages import RoundStart
from protocol.model_config import parameter_shapes


def eval_losses(out: Path, n_nodes: int) -> dict[int, float]:
    """Held-out loss per evaluated round, from whichever nodes evaluated it (every member holds
    the same model after each round, and the split is fixed)."""
    losses: dict[int, float] = {}
    for i in range(n_nodes):
        path = out / f"node-{i}" / EVALS
        if path.is_file():
            for line in filter(str.strip, path.read_text().splitlines()):
                row = json.loads(line)
                losses.setdefault(int(row["round"]), float(row["loss"]))
    return dict(sorted(losses.items()))


def work_batches(records: list[RecordRound], effects: list, verdicts: list[VerdictSeen]) -> Counter:
    """Batches of work each member was paid for: its accepted batches, and the batches of every
    target it replayed in a round it was credited for validating."""
    starts = [e.message for e in effects if isinstance(e, Publish) and isinstance(e.message, RoundStart)]
    shares = {m.round: m.batches for m in starts}
    credited = {(r.round, k) for r in records for k in r.validated}
    work = Counter()
    for r in records:
        work.update(r.batches)
    for v in verdicts:
        if (v.round, v.validator) in credited:
            work[v.validator] += len(shares[v.round].get(v.target, ()))
    return work


def summarize(
    args, config, chain: EranosClient, nodes: list[Keypair], status: dict, run_id: int, exited: list[str]
) -> dict:
    journal, effects = Journal.open(args.out / "journal.jsonl", initial_state(config))
    state = journal.state
    journal.close()
    records = [e for e in effects if isinstance(e, RecordRound)]
    expected = Counter()
    for r in records:
        for k in r.contributed:
            expected[k] += config.chain.points_per_batch * r.batches[k]
        for k in r.validated:
            expected[k] += config.chain.points_per_validation
    hashes, verdicts = defaultdict(set), []
    for line in (args.out / "journal.jsonl").read_text().splitlines():
        _, event, _ = decode_entry(line)
        if isinstance(event, HeartbeatSeen) and event.round >= 0:
            hashes[event.round].add(event.model_hash.hex())
        elif isinstance(event, VerdictSeen):
            verdicts.append(event)
    work = work_batches(records, effects, verdicts)
    members, roots = [], {r.round: r.root for r in chain.run(run_id).recent}
    for i, kp in enumerate(nodes):
        client = EranosClient(chain.transport, kp, authority=chain.key)
        m = client.member(run_id, kp.pubkey())
        findings = (
            audit(bytes(kp.pubkey()), read_log(args.out / f"node-{i}"), roots, m.contributions) if m else []
        )
        claimed = client.claim(run_id) if m is not None and m.unclaimed else 0
        m = client.member(run_id, kp.pubkey())
        members.append(
            {
                "node": i,
                "key": str(kp.pubkey()),
                "adversary": args.adv.get(i),
                "points": m.points_earned if m else 0,
                "expected_points": expected[bytes(kp.pubkey())],
                "work_batches": work[bytes(kp.pubkey())],
                "points_per_batch": (m.points_earned / work[bytes(kp.pubkey())])
                if m and work[bytes(kp.pubkey())]
                else None,
                "claimed_now": claimed,
                "tokens": client.token_balance(run_id),
                "penalties": m.penalties if m else 0,
                "stake": m.stake if m else 0,
                "status": m.status.name.lower() if m else "none",
                "audit_findings": findings,  # eranos node audit: the chain's record against the node's log
            }
        )
    n_params = sum(math.prod(shape) for _, shape in parameter_shapes(config.model.model_config()))
    bytes_per_step = status.get("bytes_per_step") or 0
    penalized = {
        str(i): [r.round for r in records if bytes(kp.pubkey()) in r.penalized] for i, kp in enumerate(nodes)
    }
    index = {bytes(kp.pubkey()): str(i) for i, kp in enumerate(nodes)}
    events = timeline.load(args.out)
    for i, kp in enumerate(nodes):
        members[i]["compute_utilization"] = timeline.utilization(
            events.get(f"node-{str(kp.pubkey())[:8]}", [])
        )
    measured = [m["compute_utilization"] for m in members if m["compute_utilization"] is not None]
    startups = [timeline.startup(evs) for name, evs in events.items() if name.startswith("node-")]
    loss_per_node = defaultdict(dict)
    for r in records:
        for key, loss in r.losses.items():
            loss_per_node[index.get(key, key.hex()[:8])][r.round] = loss
    summary = {
        "nodes": args.nodes,
        "rounds": args.rounds,
        "overlap": config.rounds.overlap,
        "kills": args.kills,
        "joins": args.joins,
        "coordinator_restarted_after": args.restart_coordinator,
        "rounds_recorded_on_chain": [r.round for r in chain.run(run_id).recent],
        "adversaries": {str(k): v for k, v in args.adv.items()},
        # the loss validators' replays computed; what members claimed stays beside it
        "loss_per_round": {int(k): v for k, v in status.get("verified_losses", {}).items()},
        "self_reported_loss_per_round": {int(k): v for k, v in status.get("losses", {}).items()},
        "loss_per_node": dict(sorted(loss_per_node.items())),
        "eval_loss_per_round": eval_losses(args.out, len(nodes)),
        # each node's own forward/backward as a share of its wall time, from its event log
        "compute_utilization_mean": sum(measured) / len(measured) if measured else None,
        # seconds per start-up stage, mean over the nodes that reached it (from their event logs)
        "startup_seconds": {
            stage: sum(s[stage] for s in startups if stage in s) / sum(stage in s for s in startups)
            for stage in dict.fromkeys(k for s in startups for k in s)
        },
        "bytes_per_node_per_step": bytes_per_step,
        "dense_bf16_bytes": 2 * n_params,
        "compression_vs_dense_bf16": (2 * n_params / bytes_per_step) if bytes_per_step else None,
        "model_hash_agreement": {r: len(h) == 1 for r, h in sorted(hashes.items())},
        # handed out but neither accepted, carried over nor in a round under way (an interrupted
        # run's): zero unless the coordinator lost data
        "lost_batches": state.next_batch - state.accepted_batches - len(state.carry_over) - in_flight(state),
        "batches_carried_over_at_end": len(state.carry_over),
        "penalized_rounds": {k: v for k, v in penalized.items() if v},
        "validation_checks": status.get("checks", {}),  # the coordinator's count, by result
        # a node that left is credited on chain only for rounds recorded before it left
        "chain_points_match_coordinator": all(
            m["points"] == m["expected_points"] for i, m in enumerate(members) if i not in args.leaves
        ),
        "processes_exited_early": exited,  # crashed: none expected
        "members": members,
    }
    if args.hostile:
        summary["hostile_peer"] = {
            "rejected_messages": status.get("rejected_messages", {}),
            "refused_joins": status.get("refused_joins", {}),
            "event_outcomes": status.get("event_outcomes", {}),
        }
    return summary
