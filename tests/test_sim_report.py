"""The simulator's verdict: what makes a run fail, and what an adversary's lot does not."""

import json

from protocol.usage import USAGE, read_usage, write_usage
from scripts.sim_report import problems, resources, resources_line, run_lines


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


def test_resources_average_each_nodes_usage_over_the_rounds_and_skip_nodes_that_wrote_none(tmp_path):
    def usage(path, cpu, rss, messages):
        path.mkdir(parents=True, exist_ok=True)
        record = {"cpu_s": cpu, "peak_rss_mb": rss, "bytes": {}, "gossip_messages": messages}
        (path / USAGE).write_text(json.dumps(record))

    usage(tmp_path, 12.0, 300.0, {"received:Heartbeat": 40})
    usage(tmp_path / "node-0", 5.0, 500.0, {"received:Commit": 8, "received:RoundEnd": 4, "sent:Commit": 4})
    usage(tmp_path / "node-1", 7.0, 700.0, {"received:Commit": 12, "sent:Commit": 4, "sent:Heartbeat": 4})
    r = resources(tmp_path, n_nodes=3, rounds=4)  # node-2 was killed: it wrote nothing
    assert r["nodes_reporting"] == 2 and r["coordinator_cpu_s"] == 12.0
    assert r["node_peak_rss_mb_mean"] == 600.0 and r["node_peak_rss_mb_max"] == 700.0
    assert r["gossip_received_per_node_per_round"] == (12 + 12) / 2 / 4
    assert r["gossip_sent_per_node_per_round"] == (4 + 8) / 2 / 4
    assert resources_line(r) == (
        "resources: coordinator CPU 12 s, node memory 600 MB mean 700 max, "
        "gossip per node per round 3.0 received, 1.5 sent"
    )


def test_a_written_usage_record_reads_back_with_this_process_figures(tmp_path):
    write_usage(tmp_path / USAGE, {"gossip_sent": 10}, {"sent:Commit": 1})
    record = read_usage(tmp_path / USAGE)
    assert record["bytes"] == {"gossip_sent": 10} and record["gossip_messages"] == {"sent:Commit": 1}
    assert record["cpu_s"] > 0 and record["peak_rss_mb"] > 10
    assert read_usage(tmp_path / "missing.json") is None


def test_the_run_lines_say_when_rounds_overlapped():
    assert "rounds: 2 recorded on chain of 2 (overlapped)" in run_lines(summary(overlap=True))
    assert "rounds: 2 recorded on chain of 2" in run_lines(summary(overlap=False))
