"""A member checks the coordinator's record of it: roots, its own inclusion, its credited batches."""

import subprocess
import sys
from pathlib import Path

from chain.keys import save_keypair
from chain.localnet import Localnet
from node.audit import LoggedRound, audit, log_round, read_log
from protocol.commitments import commitment_root
from tests.chain_world import RUN_ID, World

ROOT = Path(__file__).resolve().parent.parent
ME, OTHER = bytes([1]) * 32, bytes([2]) * 32
P1, P2 = bytes([0x11]) * 32, bytes([0x22]) * 32


def round_with(number, accepted, batches):
    return LoggedRound(number, accepted, batches, complete=True)


def test_a_record_that_matches_the_log_has_no_findings():
    log = [round_with(0, {ME: P1, OTHER: P2}, {ME: 2, OTHER: 2})]
    assert audit(ME, log, {0: commitment_root({ME: P1, OTHER: P2})}, credited_batches=2) == []


def test_a_root_that_leaves_this_nodes_commit_out_is_found():
    log = [round_with(0, {ME: P1, OTHER: P2}, {ME: 2, OTHER: 2})]
    findings = audit(ME, log, {0: commitment_root({OTHER: P2})}, credited_batches=2)
    assert findings[0] == "round 0: the recorded root is not the root of the commits accepted"
    assert "round 0: this node's commit is not under the recorded root" in findings


def test_batches_credited_on_chain_must_be_the_accepted_ones():
    log = [round_with(0, {ME: P1}, {ME: 3}), round_with(1, {OTHER: P2}, {OTHER: 1})]
    roots = {0: commitment_root({ME: P1}), 1: commitment_root({OTHER: P2})}
    assert audit(ME, log, roots, credited_batches=2) == [
        "batches credited on chain 2, accepted in this node's log 3"
    ]


def test_rounds_the_node_could_not_see_whole_are_not_judged_on_their_root():
    log = [LoggedRound(0, {ME: P1}, {ME: 1, OTHER: 1}, complete=False)]
    assert audit(ME, log, {0: bytes(32)}, credited_batches=1) == []


def test_the_log_round_trips_and_skips_torn_lines(tmp_path):
    entry = round_with(4, {ME: P1}, {ME: 2})
    log_round(tmp_path, entry)
    with (tmp_path / "rounds.jsonl").open("a") as f:
        f.write('{"round": 5, "acc')
    assert read_log(tmp_path) == [entry]


def eranos_node(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "eranos", "node", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_the_audit_command_reads_the_chain_and_names_a_mismatch(tmp_path):
    net = Localnet()
    server = net.serve()
    try:
        world = World(svm=net.svm, rpc_url=server.url)
        (node,) = world.permissioned(1)
        save_keypair(node.keypair, tmp_path / "id.json")
        world.authority.record_round(RUN_ID, 0, commitment_root({bytes(node.key): P1}), contributed={0: 2})
        log_round(tmp_path, round_with(0, {bytes(node.key): P1}, {bytes(node.key): 2}))
        argv = ["audit", "--keypair", str(tmp_path / "id.json"), "--rpc", server.url, "--run-id", str(RUN_ID)]
        argv += ["--authority", str(world.authority.key), "--workdir", str(tmp_path)]
        out = eranos_node(*argv)
        assert out.returncode == 0 and "matches its own log" in out.stdout
        log_round(tmp_path, round_with(1, {bytes(node.key): P2}, {bytes(node.key): 1}))  # never credited
        out = eranos_node(*argv)
        assert out.returncode == 1 and "MISMATCH batches credited on chain 2" in out.stdout
    finally:
        server.close()
