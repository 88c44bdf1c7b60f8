"""eranos node refuses bad input by name and waits out an unreachable coordinator."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from solders.keypair import Keypair

from chain.keys import save_keypair
from chain.state import MemberStatus
from node.session import register
from tests.chain_world import RUN_ID, World

COORDINATOR = "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWEffxhcmT9QcHPF3bG9HsnUYML1fcmeSMGZDy38d8NBp1"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "eranos", "node", *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_running_without_a_coordinator_is_refused_naming_the_flag(tmp_path):
    save_keypair(Keypair(), tmp_path / "id.json")
    out = run_cli("run", "--keypair", str(tmp_path / "id.json"))
    assert out.returncode == 2 and "--coordinator" in out.stderr


def test_claim_without_rpc_is_refused(tmp_path):
    save_keypair(Keypair(), tmp_path / "id.json")
    out = run_cli("claim", "--keypair", str(tmp_path / "id.json"))
    assert out.returncode == 2 and "--rpc" in out.stderr


def test_sharding_without_torchrun_is_refused_in_one_line(tmp_path):
    save_keypair(Keypair(), tmp_path / "id.json")
    out = run_cli("run", "--keypair", str(tmp_path / "id.json"), "--coordinator", COORDINATOR, "--shard")
    assert out.returncode != 0 and "torchrun --nproc-per-node" in out.stderr and "Traceback" not in out.stderr


def test_a_production_node_has_no_switch_to_misbehave():
    out = run_cli("run", "--help")
    assert out.returncode == 0
    assert not any(word in out.stdout.lower() for word in ("byzantine", "adversar", "dishonest"))


def test_a_missing_keypair_file_is_refused_naming_it(tmp_path):
    out = run_cli("run", "--keypair", str(tmp_path / "nope.json"), "--coordinator", COORDINATOR)
    assert out.returncode != 0 and "nope.json" in out.stderr and "Traceback" not in out.stderr


def test_an_unreachable_coordinator_is_reported_and_retried(tmp_path):
    save_keypair(Keypair(), tmp_path / "id.json")
    addr = COORDINATOR
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "eranos",
            "node",
            "run",
            "--keypair",
            str(tmp_path / "id.json"),
            "--coordinator",
            addr,
            "--workdir",
            str(tmp_path / "w"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    time.sleep(10)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert "cannot reach the coordinator" in err and "retrying" in err and "Traceback" not in err


def test_a_run_whose_chain_authority_is_not_the_coordinator_is_refused_before_staking():
    world = World()
    world.permissionless()
    node = world.client()
    impostor = bytes(Keypair().pubkey())
    with pytest.raises(SystemExit, match="refusing to join"):
        register(node, RUN_ID, impostor, threading.Event())
    assert node.member(RUN_ID, node.key) is None
    register(node, RUN_ID, bytes(world.authority.key), threading.Event())
    assert node.member(RUN_ID, node.key).status == MemberStatus.ACTIVE


def test_a_coordinator_address_without_its_peer_id_is_refused_in_one_line(tmp_path):
    save_keypair(Keypair(), tmp_path / "id.json")
    out = run_cli("run", "--keypair", str(tmp_path / "id.json"), "--coordinator", "/ip4/127.0.0.1/tcp/9")
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1
    assert "lacks /p2p/<peer id>: give it as /ip4/" in out.stderr
