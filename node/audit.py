"""What a member checks of the coordinator's record: `eranos node audit`.

Every round it applies, a node appends to its own log (`rounds.jsonl` in its work directory) the
accepted members, their payload hashes and batch counts, and whether its own contribution was
among them. The audit compares that log with the chain: each recorded round's Merkle root must be
the root over the accepted commits the node saw, the node's own commit must be provably included
in every round it was accepted (protocol/commitments.py), and the batches credited to it on chain
must be the accepted batches in its log. Any difference is a finding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from protocol.commitments import commitment_root, inclusion_proof, verify_inclusion

LOG = "rounds.jsonl"


@dataclass(frozen=True)
class LoggedRound:
    round: int
    accepted: dict[bytes, bytes]  # member -> payload hash
    batches: dict[bytes, int]  # member -> accepted batches
    complete: bool  # the node saw every accepted member's commit (else the root cannot be checked)


def log_round(workdir: Path, entry: LoggedRound) -> None:
    line = {
        "round": entry.round,
        "accepted": {k.hex(): v.hex() for k, v in entry.accepted.items()},
        "batches": {k.hex(): n for k, n in entry.batches.items()},
        "complete": entry.complete,
    }
    with (workdir / LOG).open("a") as f:
        f.write(json.dumps(line) + "\n")


def read_log(workdir: Path) -> list[LoggedRound]:
    """The node's own log; lines it cannot read are skipped (it is the node's own file)."""
    out = []
    path = workdir / LOG
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            raw = json.loads(line)
            accepted = {bytes.fromhex(k): bytes.fromhex(v) for k, v in raw["accepted"].items()}
            batches = {bytes.fromhex(k): int(n) for k, n in raw["batches"].items()}
            out.append(LoggedRound(int(raw["round"]), accepted, batches, bool(raw["complete"])))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return out


def audit(me: bytes, log: list[LoggedRound], roots: dict[int, bytes], credited_batches: int) -> list[str]:
    """Findings: differences between the node's log and the chain's record (empty: none).
    `roots`: round -> recorded root for the rounds the chain still lists."""
    findings = []
    for entry in log:
        root = roots.get(entry.round)
        if root is None or not entry.complete:
            continue  # older than the chain's recent ring, or not checkable from what the node saw
        if commitment_root(entry.accepted) != root:
            findings.append(f"round {entry.round}: the recorded root is not the root of the commits accepted")
        if me in entry.accepted:
            proof = inclusion_proof(entry.accepted, me)
            if not verify_inclusion(root, me, entry.accepted[me], proof):
                findings.append(f"round {entry.round}: this node's commit is not under the recorded root")
    logged = sum(entry.batches.get(me, 0) for entry in log)
    if credited_batches != logged:
        findings.append(f"batches credited on chain {credited_batches}, accepted in this node's log {logged}")
    return findings
