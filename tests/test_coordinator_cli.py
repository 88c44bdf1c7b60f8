"""eranos coordinator refuses bad input by name and waits out an unreachable RPC endpoint."""

import os
import signal
import subprocess
import sys
import time

import pytest
from solders.keypair import Keypair

from chain.keys import save_keypair

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, timeout=60):
    cmd = [sys.executable, "-m", "eranos", "coordinator", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture
def keypair(tmp_path):
    save_keypair(Keypair(), tmp_path / "coord.json")
    return str(tmp_path / "coord.json")


def test_an_invalid_config_value_is_refused_naming_it(tmp_path, keypair):
    (tmp_path / "run.toml").write_text("[rounds]\nmin_nodes = 0\n")
    out = run_cli("--config", str(tmp_path / "run.toml"), "--keypair", keypair)
    assert out.returncode != 0 and "rounds.min_nodes" in out.stderr and "Traceback" not in out.stderr


def test_a_missing_flag_is_refused_naming_it(tmp_path):
    out = run_cli("--config", "configs/sim.toml")
    assert out.returncode == 2 and "--keypair" in out.stderr


def test_a_bad_keypair_file_is_refused_naming_it(tmp_path):
    (tmp_path / "bad.json").write_text("[1, 2]")
    out = run_cli("--config", "configs/sim.toml", "--keypair", str(tmp_path / "bad.json"))
    assert out.returncode != 0 and "bad.json" in out.stderr and "Traceback" not in out.stderr


def test_an_unreachable_rpc_is_reported_and_retried_not_a_traceback(keypair):
    cmd = [
        sys.executable,
        "-m",
        "eranos",
        "coordinator",
        "--config",
        "configs/sim.toml",
        "--keypair",
        keypair,
        "--rpc",
        "http://127.0.0.1:9",
        "--no-live",
        "--http",
        "off",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    time.sleep(8)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert "cannot reach the Solana RPC endpoint http://127.0.0.1:9" in err and "retrying" in err
    assert "Traceback" not in err
