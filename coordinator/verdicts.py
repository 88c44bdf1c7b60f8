"""Deciding a round from its commits, payload checks and verdicts: who is accepted into the
aggregate, who is credited for validating, who is penalized.

For each committed target T, in this order:
- T committed a payload hash another member committed earlier in the round: an exact copy,
  penalized on public data alone (the original's author had to publish first to be copied).
- T's payload failed the coordinator's own fetch-and-decode check, or T computed it from an
  optimizer state that is neither fresh nor the one its last accepted payload left it with (so
  it could carry momentum no validator replayed): penalized, no re-computation.
- T's payload was never checked (the coordinator could not fetch it in time): left out of the
  aggregate, since members could not apply it consistently either; not penalized.
- T was not sampled, or its first validator V sent nothing: accepted.
- V accepted: accepted; V credited.
- V rejected, and the second validator W
  - rejected too: T penalized; V and W credited;
  - accepted: V was contradicted and is penalized; T accepted; W credited;
  - sent nothing, or none could be chosen (NOBODY): T left out of the aggregate, nobody penalized.
A penalized member is never credited in the same round.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.state import Round

NOBODY = b""  # the tie-breaker of a contested target when no member is left to choose


@dataclass(frozen=True)
class Decision:
    accepted: tuple[bytes, ...]
    rejected: tuple[bytes, ...]  # committed but left out of the aggregate
    penalized: tuple[bytes, ...]
    validated: tuple[bytes, ...]


def contested(r: Round) -> list[bytes]:
    """Targets whose first validator rejected them and that passed the payload check."""
    first = {target: validator for validator, target in r.validators.items()}
    return sorted(
        t
        for t, v in first.items()
        if t in r.commits
        and r.checks.get(t, True)
        and r.commits[t].chained
        and r.verdicts.get((v, t)) is False
    )


def copies(r: Round) -> set[bytes]:
    """Members whose payload hash an earlier commit of the round already carried. Members given
    no batches are left out: with no gradient, two fresh members honestly send the same bytes."""
    seen, out = set(), set()
    for key, commit in sorted(r.commits.items(), key=lambda kv: (kv[1].at, kv[0])):
        if not r.batches.get(key):
            continue
        if commit.payload_hash in seen:
            out.add(key)
        seen.add(commit.payload_hash)
    return out


def decide(r: Round) -> Decision:
    first = {target: validator for validator, target in r.validators.items()}
    accepted, rejected, penalized, validated = set(), set(), copies(r), set()
    for target in r.commits:
        if target in penalized:
            continue
        if r.checks.get(target) is False or not r.commits[target].chained:
            penalized.add(target)
            continue
        if target not in r.checks:
            rejected.add(target)
            continue
        v = first.get(target)
        verdict = r.verdicts.get((v, target)) if v is not None else None
        if verdict is None:
            accepted.add(target)
        elif verdict:
            accepted.add(target)
            validated.add(v)
        else:
            w = r.tiebreakers.get(target)
            second = r.verdicts.get((w, target)) if w not in (None, NOBODY) else None
            if second is None:
                rejected.add(target)
            elif second:
                accepted.add(target)
                penalized.add(v)
                validated.add(w)
            else:
                penalized.add(target)
                validated.update((v, w))
    accepted -= penalized
    validated -= penalized
    rejected = (rejected | (set(r.commits) - accepted)) - penalized
    return Decision(
        tuple(sorted(accepted)), tuple(sorted(rejected)), tuple(sorted(penalized)), tuple(sorted(validated))
    )


def complete(r: Round) -> bool:
    """Every check and every verdict the round can still get is in."""
    if any(k not in r.checks for k in r.commits):
        return False
    for validator, target in r.validators.items():
        if target in r.commits and (validator, target) not in r.verdicts and validator in r.commits:
            return False
    for target in contested(r):
        w = r.tiebreakers.get(target)
        if w is None or (w != NOBODY and (w, target) not in r.verdicts):
            return False
    return True
