"""The node keeps a round's optimizer state only when its payload counted, and commits to it."""

import queue
import threading
import time
from pathlib import Path

import pytest
import torch

from node import machine
from node import runtime as runtime_module
from node.outputs import EVALS
from node.runtime import NodeRuntime
from optim.codec import decode
from optim.state import is_fresh, state_bytes
from p2p.host import Host
from p2p.identity import Identity
from p2p.messages import FRESH_STATE, Commit, RoundEnd, RoundStart
from protocol.run_config import load

ROOT = Path(__file__).resolve().parent.parent
Z = bytes(32)
COORDINATOR = Identity.from_seed(b"\x0c" * 32).public_key


@pytest.fixture
def runtime(tmp_path):
    config = load(ROOT / "configs" / "sim.toml")
    host = Host(Identity.from_seed(b"\x05" * 32), config.run.name).start()
    runtime = NodeRuntime(config, host, COORDINATOR, tmp_path, torch.device("cpu"))
    yield runtime
    runtime.close()
    host.close()


def train(runtime, number):
    me = runtime.me
    start = RoundStart(number, number, number, [me], {me: [number]}, time.time() + 60, runtime.hash, Z, Z)
    return runtime._train(machine.Train(start)).commit


def end(runtime, number, accepted):
    runtime.contributions.settle(number, accepted)


def test_a_first_commit_starts_from_the_fresh_state_and_names_the_state_after(runtime):
    commit = train(runtime, 0)
    assert isinstance(commit, Commit) and commit.state_before == FRESH_STATE
    assert runtime.host.blobs.has(commit.state_after) and commit.state_after != FRESH_STATE


def test_an_accepted_round_keeps_its_state_and_the_next_commit_starts_from_it(runtime):
    commit = train(runtime, 1)
    end(runtime, 1, accepted=True)
    assert train(runtime, 2).state_before == commit.state_after


def test_a_rejected_round_restores_the_state_before_it(runtime):
    train(runtime, 2)
    end(runtime, 2, accepted=True)
    before = state_bytes(runtime.optimizer)
    train(runtime, 3)
    assert state_bytes(runtime.optimizer) != before
    end(runtime, 3, accepted=False)
    assert state_bytes(runtime.optimizer) == before


def test_a_round_whose_end_never_came_is_followed_by_a_fresh_state(runtime):
    train(runtime, 3)
    end(runtime, 3, accepted=True)
    train(runtime, 4)  # RoundEnd 4 never arrives
    commit = train(runtime, 5)
    assert commit.state_before == FRESH_STATE and not is_fresh(runtime.optimizer)


def test_a_payload_is_stamped_with_its_sender_round_and_step(runtime):
    commit = train(runtime, 6)
    payload = decode(runtime.optimizer.spec, runtime.host.blobs.read_all(commit.payload_hash))
    assert (payload.origin, payload.round, payload.step) == (runtime.me, 6, 6)


def test_held_out_loss_is_kept_every_eval_rounds(runtime):
    import json

    for number in (3, 4):  # configs/sim.toml evaluates after every 5th round: not after round 3
        runtime.outputs.after(RoundEnd(number, [runtime.me], [], [], Z, runtime.hash))
    rows = [json.loads(line) for line in (runtime.workdir / EVALS).read_text().splitlines()]
    assert [r["round"] for r in rows] == [4]
    assert rows[0]["loss"] == pytest.approx(runtime.trainer.evaluate(runtime.config.eval.sequences))


def test_a_state_is_served_from_a_file_of_its_leaves_which_goes_when_the_state_does(runtime):
    train(runtime, 7)
    end(runtime, 7, accepted=True)
    first = runtime.contributions.held
    assert first.path.is_file() and len(first.spans) > 1
    assert runtime.host.blobs.has(first.digest) and all(runtime.host.blobs.has(d) for d in first.served)
    train(runtime, 8)
    end(runtime, 8, accepted=True)
    assert not first.path.exists() and not runtime.host.blobs.has(first.digest)
    assert runtime.contributions.held.path.is_file()


def test_a_round_whose_state_cannot_be_written_is_not_committed_and_the_next_one_is(
    runtime, monkeypatch, caplog
):
    from node import committed_state

    first = train(runtime, 4)
    end(runtime, 4, accepted=True)
    serve = committed_state.serve

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(committed_state, "serve", disk_full)
    assert train(runtime, 5) is None
    assert "round 5 not committed: cannot write the optimizer state" in caplog.text
    monkeypatch.setattr(committed_state, "serve", serve)
    assert train(runtime, 6).state_before == first.state_after


def test_the_loop_steps_a_job_result_when_it_arrives_not_at_the_next_tick(runtime, monkeypatch):
    monkeypatch.setattr(runtime_module, "TICK_S", 120.0)
    stepped: queue.Queue = queue.Queue()
    monkeypatch.setattr(runtime, "step", stepped.put)
    stop = threading.Event()
    loop = threading.Thread(target=runtime.run, args=(stop,))
    loop.start()
    try:
        runtime._worker.submit(runtime._job, machine.Sync(runtime.hash, 3, 3))  # held already: at once
        assert stepped.get(timeout=30) == machine.Synced(runtime.hash, 3)
    finally:
        stop.set()
        runtime.host.arrived.set()
        loop.join(timeout=30)
