import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from protocol.events import Event

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_reports_compression_and_index_bits_for_a_tiny_model(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/bench_optim.py"),
            "--models",
            "llama-tiny",
            "--ks",
            "4",
            "32",
            "--repeat",
            "1",
            "--json",
            "--plot",
            str(tmp_path / "bench.png"),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    rows = json.loads(out.stdout)["rows"]
    assert [(r["model"], r["k"]) for r in rows] == [("llama-tiny", 4), ("llama-tiny", 32)]
    for r in rows:
        assert r["bytes"] * r["x_vs_dense_bf16"] == pytest.approx(2 * r["params"])
        assert r["index_vs_bound"] <= 1.05
        assert r["x_vs_reference_format"] > 1
    assert (tmp_path / "bench.png").stat().st_size > 0


def test_gpu_benchmark_runs_the_training_step_on_cpu_with_the_tiny_preset():
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/bench_gpu.py"),
            "--device",
            "cpu",
            "--presets",
            "tiny",
            "--seq-len",
            "32",
            "--batch-seqs",
            "4",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    (row,) = json.loads(out.stdout)["rows"]
    assert row["preset"] == "tiny" and row["tokens_per_step"] == 128
    assert 0 < row["optimizer_share"] < 1 and row["mfu"] is None


def _convergence(out: Path, name: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts/bench_convergence.py"), "--steps", "4", "--eval-every", "2"]
        + ["--threads", "1", "--json", "--plot", str(out / f"{name}.png"), *flags],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def stored_arm(tmp_path_factory) -> Path:
    """A 4-step run of the defaults, kept as --json output."""
    out = tmp_path_factory.mktemp("convergence")
    (out / "a.json").write_text(_convergence(out, "a").stdout)
    return out / "a.json"


def test_convergence_benchmark_takes_adamw_curves_from_a_stored_arm_instead_of_training(stored_arm):
    first = json.loads(stored_arm.read_text())
    for i, point in enumerate(first["runs"][0]["curve"]):
        point["adamw"] = 10.0 + i  # marked values: a retrained arm would not give them
    marked = stored_arm.parent / "marked.json"
    marked.write_text(json.dumps(first))
    second = json.loads(
        _convergence(stored_arm.parent, "b", "--topk", "5", "--adamw-from", str(marked)).stdout
    )
    assert [p["adamw"] for p in second["runs"][0]["curve"]] == [10.0, 11.0]
    assert second["summary"]["bytes_per_step_adamw"] == 2 * 804_736
    assert second["summary"]["bytes_per_step_demo"] < first["summary"]["bytes_per_step_demo"]
    assert second["demo_config"]["topk"] == 5 and first["demo_config"]["topk"] == 18


def test_convergence_benchmark_refuses_a_stored_adamw_arm_of_another_baseline(stored_arm):
    other = _convergence(stored_arm.parent, "c", "--adam-lr", "2e-3", "--adamw-from", str(stored_arm))
    assert other.returncode != 0
    assert other.stderr.strip().endswith("its AdamW-DDP arm differs from this run's in adam_lr")


# a decay over the last 2 of 4 steps, so a schedule's final_ratio shows in the 4th step
CHECKPOINTED = ("--decay-fraction", "0.5", "--checkpoint-every", "2")


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory) -> tuple[Path, dict]:
    """A 4-step run saving its state at step 2, and its --json output."""
    out = tmp_path_factory.mktemp("checkpointed")
    run = _convergence(out, "a", *CHECKPOINTED, "--checkpoint", str(out / "ckpt"))
    return out, json.loads(run.stdout)


def _continued(out: Path, name: str, *flags: str) -> subprocess.CompletedProcess:
    """The checkpointed run's command again, from a copy of its step-2 checkpoint."""
    shutil.copytree(out / "ckpt", out / name)
    return _convergence(out, name, *CHECKPOINTED, "--checkpoint", str(out / name), *flags)


def test_convergence_benchmark_continued_from_a_checkpoint_ends_to_the_bit_where_the_unbroken_run_did(
    checkpointed,
):
    out, unbroken = checkpointed
    continued = _continued(out, "same")
    assert "continuing" in continued.stderr and "from step 2" in continued.stderr
    assert json.loads(continued.stdout)["runs"][0]["curve"] == unbroken["runs"][0]["curve"]


def test_convergence_benchmark_branches_from_a_checkpoint_into_a_schedule_that_agrees_up_to_it(checkpointed):
    out, unbroken = checkpointed
    branch = json.loads(_continued(out, "to-zero", "--final-ratio", "0").stdout)["runs"][0]["curve"]
    assert branch[0] == unbroken["runs"][0]["curve"][0]
    assert branch[1]["adamw"] == unbroken["runs"][0]["curve"][1]["adamw"]
    assert branch[1]["demo"] != unbroken["runs"][0]["curve"][1]["demo"]


def test_convergence_benchmark_refuses_a_checkpoint_of_another_run_naming_what_differs(checkpointed):
    out, _ = checkpointed
    other = _continued(out, "other", "--topk", "5", "--lr", "2e-3")
    assert other.returncode != 0
    reason = "its run differs from this one in topk, DeMo's lr before the checkpoint (lr)"
    assert other.stderr.strip().endswith(reason)


def test_convergence_benchmark_refuses_a_truncated_checkpoint_in_one_line(checkpointed):
    out, _ = checkpointed
    (out / "cut").mkdir()
    (out / "cut" / "seed-0.pt").write_bytes((out / "ckpt" / "seed-0.pt").read_bytes()[:1000])
    cut = _convergence(out, "cut", *CHECKPOINTED, "--checkpoint", str(out / "cut"))
    assert cut.returncode != 0
    assert cut.stderr.strip().splitlines()[-1].endswith("seed-0.pt: unreadable checkpoint (RuntimeError)")


def test_record_round_for_1024_members_fits_one_transaction_and_the_compute_budget():
    # Compute units are deterministic (metered, not timed), so this is a budget, as SPL's
    # assert_instruction_count: the goal is <= 200k CU in one transaction at 1024 members.
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts/bench_chain.py"), "--members", "1024", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    summary = json.loads(out.stdout)
    assert summary["goal_met"]
    by_name = {r["instruction"]: r for r in summary["rows"]}
    (big,) = [r for name, r in by_name.items() if name.startswith("record_round (1024 members, every bit")]
    assert big["compute_units"] <= 200_000 and big["tx_bytes"] <= 1232
    for name in ("update_run", "authorize_node", "join (permissioned)", "leave", "withdraw_stake"):
        assert by_name[name]["compute_units"] <= 5_000, name


def test_validation_benchmark_flags_every_dishonest_contribution_and_no_honest_one():
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/bench_validation.py"),
            "--seeds",
            "1",
            "--rounds",
            "4",
            "--sample",
            "16",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    rows = {r["kind"]: r for r in json.loads(out.stdout)["rows"]}
    assert {kind: r["replay_flagged"] for kind, r in rows.items()} == {
        "honest": 0.0,
        "other-data": 1.0,
        "copy": 1.0,
        "copy+noise": 1.0,
        "flip": 1.0,
        "flip5": 1.0,
        "noise": 1.0,
        "stale": 1.0,
        "state-lie": 1.0,
    }, rows["honest"]  # an honest miss: its payload (match_min) or its next state (drift_max)
    sampled = {kind: r["sampled_flagged"] for kind, r in rows.items() if kind != "state-lie"}
    assert sampled == {kind: 0.0 if kind == "honest" else 1.0 for kind in sampled}  # 16 of 67 leaves
    assert rows["honest"]["bytes_sampled"] < rows["honest"]["bytes_whole"] / 3


def test_journal_benchmark_restarts_long_runs_from_a_snapshot_and_a_short_tail():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts/bench_journal.py"), "--rounds", "10", "300", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    rows = json.loads(out.stdout)["rows"]
    assert [r["rounds"] for r in rows] == [10, 300]
    assert rows[1]["journal_lines"] <= 50 * 7  # at most one snapshot interval of lines to replay


def fuzz(inputs: int) -> list[dict]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts/fuzz_decoders.py"), "--inputs", str(inputs), "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=3600,
    )
    return json.loads(out.stdout)


def test_every_decoder_of_hostile_bytes_answers_with_its_own_typed_error_within_bounds():
    for row in fuzz(300):
        assert row.get("untyped", 0) == 0 and row.get("slow", 0) == 0, row


@pytest.mark.slow
def test_every_decoder_survives_100_000_mutated_inputs():
    for row in fuzz(100_000):
        assert row.get("untyped", 0) == 0 and row.get("slow", 0) == 0, row


def test_membership_benchmark_settles_every_round_of_an_honest_run_and_counts_its_gossip(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts/bench_membership.py"), "--members", "4,32", "--rounds", "2",
         "--round-s", "20", "--json", "--plot", str(tmp_path / "membership.png")],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    small, large = json.loads(out.stdout)
    assert (small["members"], large["members"]) == (4, 32)
    # each member sends 10 heartbeats per 20 s round, its commit and its verdicts, to the coordinator
    assert large["coordinator_received_msgs_per_round"] == 32 * large["member_sent_msgs_per_round"]
    # a member hears every other member's commit besides the coordinator's messages
    assert large["member_received_msgs_per_round"] - small["member_received_msgs_per_round"] >= 28
    assert large["coordinator_sent_mb_per_round"] > small["coordinator_sent_mb_per_round"]
    assert (tmp_path / "membership.png").stat().st_size > 0


def test_overlap_benchmark_splits_a_nodes_time_into_own_compute_jobs_and_the_bound_replays_leave():
    from scripts.bench_overlap import shares

    def span(name, t, dur):
        return Event(t, "node-a", name, 0, dur)

    # the first train job starts half a second before its computation: only its time from
    # the first computation on counts
    evs = [span("train", -0.5, 3), span("compute", 0, 2), span("validate", 3, 2), span("apply", 6, 1)]
    evs.append(span("train", 8, 2))  # ends the node's time at 10 s
    evs.append(span("compute", 8, 2))
    assert shares(evs) == {"utilization": 0.4, "busy": 0.75, "bound": 4 / 6}


def test_overlap_benchmark_splits_a_training_workers_time_into_jobs_and_what_it_waited_for():
    from scripts.bench_overlap import breakdown

    def span(name, t, dur):
        return Event(t, "node-a", name, 0, dur)

    evs = [span("train", 0, 2.5), span("compute", 0, 2), span("validate", 3, 2), span("apply", 6, 1)]
    evs += [span("train", 8, 2), span("compute", 8, 2)]
    on_worker = breakdown(evs, replays_beside=False)
    assert on_worker == pytest.approx(
        {"compute": 0.4, "train rest": 0.05, "apply": 0.1, "sync": 0, "validate": 0.2, "wait train": 0.1,
         "wait apply": 0.1, "wait validate": 0.05, "wait sync": 0, "tail": 0}
    )  # fmt: skip
    beside = breakdown(evs, replays_beside=True)
    assert beside["validate"] == 0 and beside["wait apply"] == pytest.approx(0.35)
    assert sum(beside.values()) == pytest.approx(1) == sum(on_worker.values())


def test_scale_benchmark_gives_every_node_a_batch_a_round(tmp_path):
    from protocol.run_config import load
    from scripts.bench_scale import run_config

    assert load(run_config(32, tmp_path / "32")).rounds.global_batch == 32
    assert load(run_config(4, tmp_path / "4")).rounds.global_batch == 8  # the config's, when more


def test_scale_benchmark_counts_gossip_per_second_of_rounds():
    from scripts.bench_scale import per_second

    assert per_second({"gossip_received_per_node_per_round": 130.0, "round_s": 52.0}) == 2.5
    assert per_second({"gossip_received_per_node_per_round": None, "round_s": 52.0}) is None


@pytest.mark.slow
def test_overlap_benchmark_runs_both_modes_and_passes(tmp_path):
    from scripts.bench_overlap import main

    assert main(["--nodes", "2", "--rounds", "3", "--out", str(tmp_path), "--json"]) == 0


def test_state_memory_benchmark_checks_a_whole_state_both_ways_and_prints_the_ratio():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts/bench_state_memory.py"), "--preset", "tiny"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    assert "bytes: state 13 MB" in out.stdout and "files: state 13 MB" in out.stdout
    assert "files / bytes peak:" in out.stdout


def test_shards_benchmark_runs_both_modes_and_their_gradients_are_identical():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts/bench_shards.py"), "--preset", "tiny", "--seq-len", "32",
         "--jobs", "1", "--json"],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    replicate, shard = json.loads(out.stdout)
    assert replicate["grad_sha256"] == shard["grad_sha256"]
    assert shard["held_mb"][1] == pytest.approx(replicate["held_mb"][1] / 2, rel=0.05)
