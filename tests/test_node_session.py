"""A node process against a real coordinator process (no chain): it takes the coordinator's run,
refuses in one line what a person got wrong, says why it waits, and exits 0 when the run ends."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from solders.keypair import Keypair

from chain.keys import save_keypair
from node.cli import default_workdir
from p2p.identity import Identity

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = """
[run]
name = "alpha"
[model]
preset = "tiny"
[data]
corpus = "{corpus}"
seq_len = 32
batch_size = 2
[rounds]
min_nodes = 1
rounds = {rounds}
global_batch = 2
round_timeout_s = 30.0
verdict_timeout_s = 5.0
cooldown_s = 0.5
warmup_timeout_s = 30.0
validation_rate = 0.0
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def eranos(*args, cwd=ROOT) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "eranos", *map(str, args)]
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env)


@pytest.fixture
def coordinator(tmp_path, request):
    corpus, rounds = getattr(request, "param", ("stdlib", 1))
    (tmp_path / "run.toml").write_text(RUN.format(corpus=corpus, rounds=rounds))
    key = Keypair()
    save_keypair(key, tmp_path / "coordinator.json")
    port = free_port()
    proc = eranos(
        "coordinator", "--config", tmp_path / "run.toml", "--keypair", tmp_path / "coordinator.json",
        "--listen", f"/ip4/127.0.0.1/tcp/{port}", "--journal", tmp_path / "journal.jsonl",
        "--http", "off", "--no-chain", "--no-live",
    )  # fmt: skip
    peer = Identity.from_seed(bytes(key)[:32]).peer_id
    yield f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer}", proc
    proc.terminate()
    proc.communicate(timeout=30)


@contextmanager
def coordinator_in(directory: Path, run: str) -> Iterator[str]:
    """A coordinator (no chain) started in `directory` with this run config; its multiaddr."""
    (directory / "run.toml").write_text(run)
    key = Keypair()
    save_keypair(key, directory / "coordinator.json")
    port = free_port()
    proc = eranos(
        "coordinator", "--config", "run.toml", "--keypair", "coordinator.json",
        "--listen", f"/ip4/127.0.0.1/tcp/{port}", "--journal", "journal.jsonl", "--http", "off",
        "--no-chain", "--no-live", cwd=directory,
    )  # fmt: skip
    try:
        yield f"/ip4/127.0.0.1/tcp/{port}/p2p/{Identity.from_seed(bytes(key)[:32]).peer_id}"
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def node(tmp_path: Path, coordinator: str, *extra) -> subprocess.Popen:
    save_keypair(Keypair(), tmp_path / "node.json")
    return eranos(
        "node", "run", "--keypair", tmp_path / "node.json", "--coordinator", coordinator,
        "--listen", "/ip4/127.0.0.1/tcp/0", "--device", "cpu", "--no-chain", *extra, cwd=tmp_path,
    )  # fmt: skip


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def test_a_node_takes_the_run_the_coordinator_serves_and_exits_0_when_it_finishes(tmp_path, coordinator):
    addr, coord = coordinator
    code, err = finish(node(tmp_path, addr), timeout=240)
    assert code == 0, err
    assert "the run has finished" in err and "Traceback" not in err
    key = Keypair.from_json((tmp_path / "node.json").read_text())
    workdir = tmp_path / default_workdir(key.pubkey())
    assert (workdir / "rounds.jsonl").exists()
    assert "final checkpoint (Hugging Face format)" in err
    assert (workdir / "checkpoints" / "final" / "model.safetensors").exists()


def test_a_run_name_the_coordinator_does_not_serve_is_one_line(tmp_path, coordinator):
    addr, _ = coordinator
    code, err = finish(node(tmp_path, addr, "--run", "beta"), timeout=60)
    lines = [line for line in err.splitlines() if "reachable at" not in line]
    assert code == 1 and len(lines) == 1
    assert "the coordinator serves run 'alpha', not 'beta'" in lines[0]


@pytest.mark.parametrize("coordinator", [("/data/not-here.bin", 1)], indirect=True)
def test_a_data_file_missing_on_the_node_is_one_line_before_joining(tmp_path, coordinator):
    addr, _ = coordinator
    code, err = finish(node(tmp_path, addr), timeout=60)
    lines = [line for line in err.splitlines() if "reachable at" not in line]
    assert code == 1 and len(lines) == 1
    assert "trains on /data/not-here.bin, which is not on this machine" in lines[0]


def test_cuda_on_a_machine_without_it_is_one_line(tmp_path):
    addr = "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWEffxhcmT9QcHPF3bG9HsnUYML1fcmeSMGZDy38d8NBp1"
    save_keypair(Keypair(), tmp_path / "node.json")
    proc = eranos(
        "node", "run", "--keypair", tmp_path / "node.json", "--coordinator", addr, "--device", "cuda"
    )
    code, err = finish(proc, timeout=60)
    if "no CUDA device" not in err:
        pytest.skip("this machine has CUDA")
    assert code == 1 and len(err.splitlines()) == 1 and "use --device cpu" in err


def test_an_unreachable_coordinator_is_said_once_not_per_dial(tmp_path):
    addr = f"/ip4/127.0.0.1/tcp/{free_port()}/p2p/12D3KooWEffxhcmT9QcHPF3bG9HsnUYML1fcmeSMGZDy38d8NBp1"
    proc = node(tmp_path, addr)
    time.sleep(20)
    proc.terminate()
    _, err = finish(proc, timeout=30)
    lines = [line for line in err.splitlines() if "reachable at" not in line]
    assert lines == [f"eranos node: cannot reach the coordinator at {addr}; retrying every 5 s"]


def test_two_nodes_in_one_directory_get_their_own_work_directories():
    a, b = Keypair(), Keypair()
    assert default_workdir(a.pubkey()) != default_workdir(b.pubkey())
    assert default_workdir(a.pubkey()).name == f"eranos-node-{str(a.pubkey())[:8]}"


def test_a_listen_port_in_use_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        addr = "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWEffxhcmT9QcHPF3bG9HsnUYML1fcmeSMGZDy38d8NBp1"
        proc = node(tmp_path, addr, "--listen", f"/ip4/127.0.0.1/tcp/{port}")
        code, err = finish(proc, timeout=60)
    assert code == 1 and len(err.splitlines()) == 1
    assert f"cannot listen on /ip4/127.0.0.1/tcp/{port}: Address already in use" in err


def metrics_pass_strict_checks(url: str) -> bool:
    """promtool's verdict on /metrics where promtool is installed (Debian's prometheus
    package); a strict OpenMetrics parse of the OpenMetrics exposition in any case."""
    import shutil

    import httpx
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as strict

    openmetrics = httpx.get(url, headers={"Accept": "application/openmetrics-text"}, timeout=5)
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert list(strict(openmetrics.text))
    if shutil.which("promtool"):
        text = httpx.get(url, timeout=5).text
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        return check.returncode == 0
    return True


def test_a_running_nodes_metrics_parse_and_pass_promtool(tmp_path, coordinator):
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    addr, _ = coordinator
    where = f"127.0.0.1:{free_port()}"
    proc = node(tmp_path, addr, "--metrics", where)
    text, deadline = "", time.monotonic() + 180
    while "eranos_node_step_seconds_count 1.0" not in text and time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            text = httpx.get(f"http://{where}/metrics", timeout=2).text
        except httpx.HTTPError:
            continue
    strict_ok = metrics_pass_strict_checks(f"http://{where}/metrics")
    finish(proc, timeout=120)
    families = {f.name for f in text_string_to_metric_families(text)}
    assert {
        "eranos_node_tokens_per_second",
        "eranos_node_step_seconds",
        "eranos_node_job_seconds",
    } <= families
    assert "eranos_node_network_bytes" in families and strict_ok


def test_node_metrics_follow_prometheus_naming():
    import torch
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from node.metrics import NodeMetrics

    metrics = NodeMetrics(lambda: {"blob_sent": 10, "gossip_sent": 3}, torch.device("cpu"))
    metrics.trained(tokens=512, seconds=2.0, optimizer_seconds=0.5, payload_bytes=1456)
    metrics.checked(accept=True, available=True)
    text = generate_latest(metrics.registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["eranos_node_tokens_per_second"].samples[0].value == 256.0
    assert families["eranos_node_optimizer_share_ratio"].samples[0].value == 0.25
    assert {s.labels["kind"]: s.value for s in families["eranos_node_network_bytes"].samples} == {
        "blob_sent": 10.0, "gossip_sent": 3.0,
    }  # fmt: skip
    assert all(f"# HELP {name}" in text for name in families)
    assert 'eranos_node_checks_total{verdict="accept"} 1.0' in text


def test_compute_utilization_is_compute_seconds_over_wall_time_since_the_first_batch():
    import torch

    from node.metrics import NodeMetrics

    metrics = NodeMetrics(dict, torch.device("cpu"))
    assert metrics.utilization(now=5.0) == 0.0
    metrics.computed(2.0, now=10.0)  # began at 8
    metrics.computed(1.0, now=16.0)
    assert metrics.utilization(now=20.0) == 3.0 / 12.0


def test_a_node_without_the_data_fetches_the_pinned_shards_from_the_coordinator(tmp_path):
    import random

    from tokenizers import Tokenizer, models, pre_tokenizers

    from eranos.prepare_data import main as prepare
    from node.shard_store import ShardStore
    from node.sharded_data import ShardedDataset
    from protocol.manifest import load as load_manifest

    words = ["</s>", "<unk>", *(f"w{i}" for i in range(200))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    coord_dir, node_dir = tmp_path / "coordinator", tmp_path / "node"
    node_dir.mkdir()
    (coord_dir / "raw").mkdir(parents=True)
    tok.save(str(coord_dir / "tokenizer.json"))
    rng = random.Random(0)
    (coord_dir / "raw" / "a.txt").write_text(" ".join(rng.choice(words[2:]) for _ in range(20_000)))
    prepare(["--tokenizer", str(coord_dir / "tokenizer.json"), "-o", str(coord_dir / "data"),
             "--shard-tokens", "8000", str(coord_dir / "raw" / "a.txt")])  # fmt: skip
    digest = load_manifest(coord_dir / "data" / "manifest.json").digest()
    run = RUN.format(corpus="stdlib", rounds=1).replace(
        'corpus = "stdlib"',
        f'corpus = "stdlib"\nmanifest = "data/manifest.json"\nmanifest_sha256 = "{digest}"',
    )
    with coordinator_in(coord_dir, run) as addr:
        code, err = finish(node(node_dir, addr), timeout=240)
    assert code == 0, err
    assert "fetching the run's data manifest; shards go to eranos-data" in err
    assert "the run has finished" in err
    (final,) = node_dir.glob("eranos-node-*/checkpoints/final")
    tokenizer = (coord_dir / "tokenizer.json").read_bytes()
    assert (final / "tokenizer.json").read_bytes() == tokenizer  # fetched by the manifest's hash
    cached = {p.name for p in (node_dir / "eranos-data" / digest[:16]).iterdir()}
    store = ShardStore(coord_dir / "data", load_manifest(coord_dir / "data" / "manifest.json"), 202)
    data = ShardedDataset(store, seq_len=32, batch_seqs=2)
    trained, prefetched = data.shards_of(range(2)), data.shards_of(range(2, 4))
    names = [s.name for s in store.manifest.shards]
    assert {"manifest.json", "tokenizer.json"} <= cached and {names[i] for i in trained} <= cached
    assert cached - {"manifest.json", "tokenizer.json"} <= {
        names[i] for i in trained | prefetched | store.pinned
    }


def test_a_run_from_a_hugging_face_directory_reaches_a_node_that_lacks_it(tmp_path):
    import json

    from node.checkpoint import model_hash, save
    from node.model import Llama
    from protocol.model_config import preset

    coord_dir, node_dir = tmp_path / "coordinator", tmp_path / "node"
    node_dir.mkdir()
    start = Llama(preset("tiny", n_layers=1), seed=7)  # not any preset's seeded initialization
    save(coord_dir / "start", start)
    run = RUN.format(corpus="stdlib", rounds=1).replace('preset = "tiny"', 'preset = "tiny"\npath = "start"')
    with coordinator_in(coord_dir, run) as addr:
        code, err = finish(node(node_dir, addr), timeout=240)
    assert code == 0, err
    workdir = next(node_dir.glob("eranos-node-*"))
    events = [json.loads(line) for line in (workdir / "events.jsonl").read_text().splitlines()]
    assert any(e["name"] == "sync" for e in events)  # it fetched the starting weights by their hash
    accepted = json.loads((workdir / "rounds.jsonl").read_text().splitlines()[0])
    assert len(accepted["accepted"]) == 1  # its round 0, trained from those weights, was accepted
    assert json.loads((workdir / "run.toml").read_text().split("hash = ")[1].split("\n")[0]) == model_hash(
        start
    )
