"""The pure parts of a sharded node (node/sharded.py): how a job is cut into micro-batches, how
their losses add up to one rank's, and the runs it refuses; the gradients themselves are
compared with one rank's in tests/test_ranks.py."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from node.ranks import Ranks, shard_refusal
from node.sharded import deal, summed_loss
from protocol.run_config import load

ROOT = Path(__file__).resolve().parent.parent
CONFIG = load(ROOT / "configs" / "sim.toml")
GPUS = Ranks(0, 2, torch.device("cuda", 0))
CPUS = Ranks(0, 2, torch.device("cpu"))


def test_a_job_is_cut_batch_by_batch_and_micro_batches_with_no_counted_target_are_left_out():
    seqs = np.arange(5 * 3).reshape(5, 3)
    counted = np.array([[True, True], [False, False], [False, False], [False, False], [False, True]])
    jobs = deal([(seqs, None), (seqs, counted)], size=2)
    assert [(j.batch, j.seqs[:, 0].tolist()) for j in jobs] == [
        (0, [0, 3]), (0, [6, 9]), (0, [12]), (1, [0, 3]), (1, [12]),
    ]  # fmt: skip
    assert jobs[0].keep is None and jobs[3].keep.tolist() == [[True, True], [False, False]]


def test_losses_add_up_batch_by_batch_in_order_as_one_rank_adds_them():
    parts = [(0, 0.1), (0, 0.2), (1, 1e16), (1, -1e16), (0, 0.3), (2, 1.0)]
    assert summed_loss(parts, 4) == (0.0 + 0.1 + 0.2 + 0.3) + (0.0 + 1e16 - 1e16) + 1.0 + 0.0


def test_a_node_without_ranks_is_told_to_start_with_torchrun():
    assert "torchrun --nproc-per-node" in shard_refusal(CONFIG, None)


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda c: replace(c, optim=replace(c.optim, inner_steps=4)), "optim.inner_steps = 4"),
        (lambda c: replace(c, rounds=replace(c.rounds, overlap=True)), "rounds.overlap = true"),
        (lambda c: replace(c, data=replace(c.data, micro_batch=0)), "data.micro_batch = 0"),
    ],
)
def test_on_gpus_a_run_the_host_cannot_compute_as_a_gpu_is_refused_naming_the_field(change, named):
    config = replace(CONFIG, data=replace(CONFIG.data, micro_batch=2))
    assert shard_refusal(config, GPUS) is None
    assert named in shard_refusal(change(config), GPUS)
    assert shard_refusal(change(config), CPUS) is None  # on the CPU, the host is where everyone computes
