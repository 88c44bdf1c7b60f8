"""The README's "On real machines" walkthrough, run as written: keygen, airdrop, run create and
show, a coordinator and two nodes on a local chain, status, claim, leave and withdraw. The test
reads the block from the README, so the two cannot drift apart."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- walkthrough -->\n```sh\n(.*?)```\n<!-- /walkthrough -->", text, re.S)
    assert block, "the README lost its walkthrough block"
    return block.group(1)


def test_the_readme_block_is_found_and_uses_only_eranos_commands():
    commands = [line.split("#")[0].strip() for line in walkthrough().splitlines()]
    programs = {c.split()[0] for c in commands if c}
    assert programs <= {"eranos", "export", "sleep", "wait", "kill"}


@pytest.mark.slow
def test_the_readme_walkthrough_runs_as_written(tmp_path):
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
    }
    script = "set -euo pipefail\n" + walkthrough()
    log = tmp_path / "walkthrough.log"
    with open(log, "w") as out_file:  # a file, not a pipe: background processes must not hold it open
        proc = subprocess.Popen(
            ["bash", "-c", script], cwd=tmp_path, env=env, text=True,
            stdout=out_file, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            proc.wait(timeout=480)
        except subprocess.TimeoutExpired:
            pass
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    out = log.read_text()
    assert proc.returncode == 0, f"the walkthrough failed or ran out of time; it printed:\n{out}"
    in_order = [
        "Wrote new keypair to coordinator.json",
        "received 10 SOL, balance 10 SOL",
        "created run 1 (permissionless)",
        "stake 0.1 SOL, slash 0.1 SOL, 5 tokens per batch, 4 tokens per check, unbonding 60 s",
        "run 1 (permissionless, running)",
        "active in run 1",
        "claimed ",
        "left run 1",
        "withdrew 0.1 SOL",
    ]
    positions = [out.find(expected) for expected in in_order]
    assert -1 not in positions and positions == sorted(positions), out
    assert "nodes join with" in out and "--coordinator /ip4/" in out
    assert out.count("joined run 1 on chain") == 2 and out.count("the run has finished") == 2
    assert re.search(r"claimed [1-9][\d,]* tokens", out), out
    assert "Traceback" not in out
