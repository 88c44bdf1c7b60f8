"""Who scores the held-out loss after a round: one member (the run's number, once), or all."""

import time
from dataclasses import replace

from node import machine
from node.outputs import EVALS
from p2p.messages import RoundEnd, RoundStart
from tests.runtime_node import start_node, stop

Z = bytes(32)


def evaluating_every_round(tmp_path, seed, by):
    return start_node(tmp_path, seed, lambda c: replace(c, eval=replace(c.eval, every_rounds=1, by=by)))


def apply_round_zero(by, tmp_path) -> dict[bytes, bool]:
    """Two members train round 0, both accepted; which of them wrote a held-out loss."""
    a, b = evaluating_every_round(tmp_path, 7, by), evaluating_every_round(tmp_path, 8, by)
    try:
        b.host.connect(a.host.addrs[0])
        members = sorted([a.me, b.me])
        batches = {k: [i] for i, k in enumerate(members)}
        rs = RoundStart(0, 0, 0, members, batches, time.time() + 60, a.hash, Z, Z)
        commits = {n.me: n._train(machine.Train(rs)).commit for n in (a, b)}
        end = RoundEnd(0, members, [], [], Z, rs.model_hash)
        for n in (a, b):
            assert n._apply(machine.Apply(rs, end, commits)).model_hash is not None
        return {n.me: (n.workdir / EVALS).is_file() for n in (a, b)}
    finally:
        stop(a, b)


def test_only_the_rounds_first_accepted_member_scores_it(tmp_path):
    wrote = apply_round_zero("first", tmp_path)
    first = min(wrote)
    assert wrote == {k: k == first for k in wrote}


def test_every_member_scores_it_when_the_run_asks_all(tmp_path):
    assert all(apply_round_zero("all", tmp_path).values())
