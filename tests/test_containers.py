"""The images in docker/, built and run for real with podman: localnet, coordinator and two nodes
in containers train the quickstart run, record its rounds on chain, and the nodes' rewards can be
claimed. The compose file is checked for what a GPU deployment needs."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from chain.client import EranosClient
from chain.keys import load_keypair

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "eranos-test-"


def test_the_compose_file_orders_start_up_by_health_and_reserves_gpus_for_nodes():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"localnet", "coordinator", "node"}
    assert services["coordinator"]["depends_on"] == {"localnet": {"condition": "service_healthy"}}
    assert services["node"]["depends_on"] == {"coordinator": {"condition": "service_healthy"}}
    assert all("healthcheck" in services[name] for name in ("localnet", "coordinator"))
    devices = services["node"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert services["node"]["build"]["args"]["BASE"].startswith("${NODE_BASE:-nvidia/cuda:")
    assert all(s["build"]["dockerfile"] == "docker/Dockerfile" for s in services.values())


def test_the_dockerfile_takes_its_base_as_an_argument_and_pins_torch():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert (
        dockerfile.startswith("#")
        and "\nARG BASE=nvidia/cuda:" in dockerfile
        and "FROM ${BASE}" in dockerfile
    )
    installs = [line for line in dockerfile.splitlines() if "pip install" in line]
    assert installs and all("torch==2.13.0" in line for line in installs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def podman(*args: str, timeout: float = 120) -> str:
    out = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def start(name: str, image: str, env: dict[str, str], volumes: list[str]) -> None:
    flags = [f"--env={k}={v}" for k, v in env.items()] + [f"--volume={v}" for v in volumes]
    podman("run", "-d", "--network=host", f"--name={PREFIX}{name}", *flags, image)


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(1)
    raise AssertionError(f"{what} within {timeout:.0f} s")


@pytest.fixture
def containers():
    yield
    names = podman("ps", "-a", "--format={{.Names}}").split()
    for name in (n for n in names if n.startswith(PREFIX)):
        subprocess.run(["podman", "rm", "-f", name], capture_output=True, timeout=60)


@pytest.mark.slow
@pytest.mark.skipif(
    not (shutil.which("podman") and shutil.which("debootstrap")), reason="needs podman and debootstrap"
)
def test_localnet_coordinator_and_two_nodes_in_containers_train_record_and_pay(tmp_path, containers):
    started = time.monotonic()
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run([str(ROOT / "docker" / "build-local.sh")], check=True, timeout=1200, cwd=ROOT, env=env)
    built = time.monotonic()
    chain_port, http_port, p2p_port = free_port(), free_port(), free_port()
    rpc = f"http://127.0.0.1:{chain_port}"
    keys = tmp_path / "keys"
    for directory in ("keys", "c", "n1", "n2"):
        (tmp_path / directory).mkdir()
    start("localnet", "eranos-localnet", {"LOCALNET_PORT": str(chain_port)}, [])
    wait_for(
        lambda: httpx.post(rpc, json={"jsonrpc": "2.0", "id": 1, "method": "getHealth"}).json(),
        60,
        "no chain",
    )
    coordinator = {"ERANOS_RPC": rpc, "AIRDROP_SOL": "10", "HTTP_PORT": str(http_port)}
    coordinator["ERANOS_LISTEN"] = f"/ip4/127.0.0.1/tcp/{p2p_port}"
    start("coordinator", "eranos-coordinator", coordinator, [f"{keys}:/keys", f"{tmp_path / 'c'}:/data"])
    status_url = f"http://127.0.0.1:{http_port}/status.json"
    wait_for(lambda: httpx.get(status_url).json(), 120, "no coordinator status")
    for i in (1, 2):
        node = {"ERANOS_RPC": rpc, "AIRDROP_SOL": "1", "COORDINATOR_HOST": "127.0.0.1"}
        node |= {"COORDINATOR_PORT": str(p2p_port), "ERANOS_LISTEN": f"/ip4/127.0.0.1/tcp/{free_port()}"}
        node["ERANOS_DEVICE"] = "cpu"
        start(f"node-{i}", "eranos-node", node, [f"{keys}:/keys:ro", f"{tmp_path / f'n{i}'}:/data"])
    for i in (1, 2):
        code = podman("wait", f"{PREFIX}node-{i}", timeout=600)
        logs = subprocess.run(["podman", "logs", f"{PREFIX}node-{i}"], capture_output=True, text=True).stderr
        assert code == "0" and "the run has finished" in logs, logs
    status = httpx.get(status_url).json()
    assert status["phase"] == "finished" and status["finalized_rounds"] == 3
    assert len(status["verified_losses"]) == 3
    authority = load_keypair(keys / "coordinator.json").pubkey()
    run = wait_for(
        lambda: (
            (r := EranosClient.connect(rpc, load_keypair(keys / "coordinator.json")).run(1)).rounds_recorded
            == 3
            and r
        ),
        60,
        "the rounds not recorded on chain",
    )
    assert run.last_round == 2
    for i in (1, 2):
        member = EranosClient.connect(
            rpc, load_keypair(tmp_path / f"n{i}" / "node.json"), authority=authority
        )
        assert member.claim(1) > 0 and member.token_balance(1) > 0
    print(f"containers: built in {built - started:.0f} s, ran in {time.monotonic() - built:.0f} s")


def test_the_grafana_dashboard_charts_only_metrics_the_processes_export():
    import json
    import re

    import torch
    from prometheus_client import generate_latest

    from coordinator.status import COUNTERS, GAUGES, LABELLED, metrics_registry
    from node.metrics import NodeMetrics

    snapshot = {key: 1 for key, *_ in GAUGES + COUNTERS} | {key: {"x": 1} for key, *_ in LABELLED}
    node = NodeMetrics(lambda: {"blob_sent": 1}, torch.device("cpu"))
    node.trained(1, 1.0, 0.1, 1)
    node.job_seconds.labels("train").observe(1.0)
    text = generate_latest(metrics_registry(lambda: snapshot)) + generate_latest(node.registry)
    exported = set(re.findall(r"^(eranos_\w+?)(?:\{| )", text.decode(), re.M))
    exported.add("eranos_node_gpu_memory_bytes")  # on CUDA only
    dashboard = json.loads((ROOT / "docker" / "grafana-dashboard.json").read_text())
    charted = {
        name
        for p in dashboard["panels"]
        for t in p["targets"]
        for name in re.findall(r"eranos_\w+", t["expr"])
    }
    assert charted and charted <= exported, charted - exported
