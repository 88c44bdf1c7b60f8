"""A node on several GPUs, each holding the whole model (node/ranks.py) or a shard of it
(node/sharded.py), run here as 2 torchrun ranks on the CPU (gloo): it hands the optimizer what
one rank computes, to the bit, so its payloads and states are a 1-rank node's and any
validator, whatever its rank count, reproduces them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from round_fixture import MICRO_BATCH, make_round, round_outputs

from node.train import Trainer

ROOT = Path(__file__).resolve().parent.parent


def torchrun(nproc: int, out: Path, *mode: str) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           str(ROOT / "tests" / "rank_worker.py"), str(out), *mode]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
    lines = done.stderr.splitlines()
    ranks_said = [line for line in lines if line.startswith("[rank") or "terminate" in line]
    assert done.returncode == 0, "\n".join(ranks_said[-40:]) or done.stderr[-3000:]
    return torch.load(out, weights_only=False)


@pytest.fixture(scope="module")
def one_rank() -> dict:
    torch.set_num_threads(1)
    model, data, optimizer, local = make_round()
    return round_outputs(Trainer(model, data, MICRO_BATCH, torch.device("cpu")), optimizer, local)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> dict:
    return torchrun(2, tmp_path_factory.mktemp("ranks") / "two.pt")


def test_two_ranks_hand_the_optimizer_one_ranks_gradient_to_the_bit(one_rank, two_ranks):
    assert all(torch.equal(a, b) for a, b in zip(one_rank["grads"], two_ranks["grads"]))
    assert one_rank["loss"] == two_ranks["loss"]


def test_two_ranks_send_one_ranks_payload(one_rank, two_ranks):
    assert one_rank["payload"] == two_ranks["payload"]


def test_two_ranks_take_one_ranks_local_steps_and_reach_its_state(one_rank, two_ranks):
    assert one_rank["local_payload"] == two_ranks["local_payload"]
    assert one_rank["state"] == two_ranks["state"] and one_rank["local_loss"] == two_ranks["local_loss"]


@pytest.mark.slow
def test_three_ranks_send_one_ranks_payload_too(one_rank, tmp_path):
    three = torchrun(3, tmp_path / "three.pt")
    assert three["payload"] == one_rank["payload"] and three["state"] == one_rank["state"]


@pytest.fixture(scope="module")
def two_shards(tmp_path_factory) -> dict:
    return torchrun(2, tmp_path_factory.mktemp("shards") / "two.pt", "shard")


def test_two_sharded_ranks_hand_the_optimizer_one_ranks_gradient_and_loss_to_the_bit(one_rank, two_shards):
    assert all(torch.equal(a, b) for a, b in zip(one_rank["grads"], two_shards["grads"]))
    assert one_rank["loss"] == two_shards["loss"]


def test_two_sharded_ranks_send_one_ranks_payload_and_reach_its_state(one_rank, two_shards):
    assert one_rank["payload"] == two_shards["payload"]
    assert one_rank["local_payload"] == two_shards["local_payload"]
    assert one_rank["state"] == two_shards["state"]


def test_two_sharded_ranks_evaluate_as_one_rank_does(one_rank, two_shards):
    assert one_rank["eval_loss"] == two_shards["eval_loss"]
    assert one_rank["accuracy"] == two_shards["accuracy"]


@pytest.mark.slow
def test_three_sharded_ranks_send_one_ranks_payload_too(one_rank, tmp_path):
    three = torchrun(3, tmp_path / "three.pt", "shard")
    assert three["payload"] == one_rank["payload"] and three["state"] == one_rank["state"]


def test_two_sharded_ranks_send_one_ranks_payload_for_a_tied_model_too(tmp_path):
    model, data, optimizer, local = make_round(tied=True)
    one = round_outputs(Trainer(model, data, MICRO_BATCH, torch.device("cpu")), optimizer, local)
    two = torchrun(2, tmp_path / "tied.pt", "shard-tied")
    assert all(torch.equal(a, b) for a, b in zip(one["grads"], two["grads"]))
    assert one["payload"] == two["payload"] and one["state"] == two["state"]
