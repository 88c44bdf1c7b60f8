"""The simulator's verdict: what makes a run fail, and what an adversary's lot does not."""

from scripts.sim_report import problems, run_lines


def summary(**changes) -> dict:
    members = [
        {"node": 0, "key": "A" * 44, "adversary": None, "points": 40, "penalties": 0, "status": "active"},
        {"node": 1, "key": "B" * 44, "adversary": None, "points": 35, "penalties": 0, "status": "active"},
    ]
    base = {
        "members": members, "model_hash_agreement": {0: True, 1: True}, "lost_batches": 0,
        "chain_points_match_coordinator": True, "processes_exited_early": [], "rounds": 2,
        "rounds_recorded_on_chain": [0, 1], "loss_per_round": {0: 5.6141, 1: 5.2},
        "bytes_per_node_per_step": 1456.0, "compression_vs_dense_bf16": 1105.4,
        "validation_checks": {"replay accepted": 4}, "wall_seconds": 31.2,
    }  # fmt: skip
    return base | changes


def test_a_healthy_run_has_no_problems():
    assert problems(summary()) == []


def test_a_node_that_never_joined_is_named():
    s = summary()
    s["members"][1] |= {"status": "none", "points": 0}
    assert problems(s) == ["node 1 never joined the run"]


def test_a_node_that_never_earned_is_named():
    s = summary()
    s["members"][0]["points"] = 0
    assert problems(s) == ["node 0 joined but never earned a point"]


def test_an_adversary_earning_nothing_and_penalized_is_no_problem():
    s = summary()
    s["members"][1] |= {"adversary": "flip", "points": 0, "penalties": 2}
    assert problems(s) == []


def test_disagreeing_models_and_lost_batches_fail_the_run():
    s = summary(model_hash_agreement={0: True, 1: False}, lost_batches=3)
    assert problems(s) == ["members held different models after rounds [1]", "3 batches lost"]


def test_the_run_lines_show_losses_to_three_decimals():
    lines = run_lines(summary())
    assert "verified loss: 5.614 -> 5.200" in lines
    assert "bytes per node per step: 1456 (1105x fewer than dense bf16)" in lines
    assert "model hash agreement: 2 of 2 rounds" in lines
