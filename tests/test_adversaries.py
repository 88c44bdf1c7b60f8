"""#12's acceptance: whole 12-round runs against each adversary, beside an honest run (slow:
about 25 minutes in all on 2 cores). No honest member is ever penalized; every cheater is
penalized or earns strictly fewer points per accepted batch than the honest members; the run
finishes; its verified loss stays within noise of the honest run's."""

import pytest

from scripts.bench_adversaries import SCENARIOS, run

pytestmark = pytest.mark.slow
ROUNDS = 12
LOSS_NOISE = 0.15  # final verified loss differs by up to ~0.1 between honest runs of this length


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    return run("honest", ROUNDS, tmp_path_factory.mktemp("honest"))


@pytest.mark.parametrize("name", [n for n in SCENARIOS if n != "honest"])
def test_cheating_does_not_pay_and_honest_members_are_never_penalized(name, honest, tmp_path):
    r = run(name, ROUNDS, tmp_path)
    assert "stalled" not in r, r.get("stalled")
    assert r["rounds_finished"] == ROUNDS and r["lost_batches"] == 0 and r["chain_points_match_coordinator"]
    assert r["honest_penalized"] == [] and r["honest_audit_findings"] == []
    for a in r["adversaries"]:
        ppb = a["points_per_batch"] or 0.0
        never_cheated = a["kind"] == "accomplice" and a["accepted_a_partner"] == 0  # no chance: honest work
        assert a["penalized_in_round"] is not None or ppb < r["honest_points_per_batch"] or never_cheated, a
    if name.startswith("non-member"):
        refused = r["hostile_refused"]
        assert all(refused.get(k, 0) > 0 for k in ("malformed", "bad_signature", "replayed", "wrong_run"))
    assert abs(r["final_verified_loss"] - honest["final_verified_loss"]) <= LOSS_NOISE
