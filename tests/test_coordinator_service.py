"""The coordinator service on 127.0.0.1: real p2p hosts, the chain in LiteSVM, scripted nodes."""

import queue
import threading
import time
from collections import Counter

import pytest
import torch
from solders.keypair import Keypair

from chain.client import EranosClient
from chain.state import Mode, RunParams
from coordinator import service as service_module
from coordinator.roster import MAX_PENDING
from coordinator.service import CoordinatorService
from coordinator.state import PayloadChecked, Phase
from node.model import Llama, preset
from optim import DemoOptimizer
from p2p.host import Host
from p2p.identity import Identity
from p2p.messages import FRESH_STATE, Commit, Envelope, Heartbeat, Join, RoundEnd, RoundStart, RunInfo
from protocol.run_config import RoundsSection, RunConfig, RunSection
from tests.chain_world import RUN_ID, SOL, World

H0, H1 = b"\x10" * 32, b"\x11" * 32
CONFIG = RunConfig(
    run=RunSection(name="svc-test", chain_run_id=RUN_ID),
    rounds=RoundsSection(
        min_nodes=2,
        rounds=2,
        global_batch=4,
        round_timeout_s=20,
        verdict_timeout_s=10,
        cooldown_s=5,
        warmup_timeout_s=20,
        heartbeat_timeout_s=60,
        validation_rate=0.0,
    ),
)


COORDINATOR = Identity.from_seed(b"\x09" * 32)


def distinct_payload(seed: int, origin: bytes, step: int = 0) -> bytes:
    """A valid payload of round 0 from `origin`: the optimizer's compress of a random gradient."""
    model = Llama(preset("tiny"))
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen)
    optimizer = DemoOptimizer(model.named_parameters(), CONFIG.demo_config())
    optimizer.step = step
    return optimizer.compress(round=0, origin=origin)


def join(service, nodes, timeout=20.0):
    """Each node announces itself; once the coordinator has read them on chain, they report the
    model they hold (a heartbeat from a key not admitted yet is ignored)."""
    for host in nodes:
        host.publish(Join(addrs=host.addrs))
    deadline = time.monotonic() + timeout
    while len(service.state.members) < len(nodes) and time.monotonic() < deadline:
        time.sleep(0.05)
    for host in nodes:
        host.publish(Heartbeat(round=-1, model_hash=H0))


def wait_for(host, kind, timeout=20.0, where=lambda m: True):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            env = host.received.get(timeout=0.2)
        except queue.Empty:
            continue
        if isinstance(env.body, kind) and where(env.body):
            return env.body
    raise AssertionError(f"no {kind.__name__} within {timeout} s")


@pytest.fixture
def network(tmp_path):
    world = World()
    world.authority.create_run(RUN_ID, Mode.PERMISSIONED, RunParams(10, 2))
    seeds = [bytes([i]) * 32 for i in (1, 2)]
    nodes, world.clients = [], {}
    for seed in seeds:
        client = EranosClient(world.transport, Keypair.from_seed(seed), authority=world.authority.key)
        client.airdrop(SOL)
        world.authority.authorize(RUN_ID, client.key)
        client.join(RUN_ID)
        world.clients[bytes(client.key)] = client
        nodes.append(Host(Identity.from_seed(seed), CONFIG.run.name, relays=[COORDINATOR.public_key]).start())
    coord_host = Host(COORDINATOR, CONFIG.run.name, hub=True).start()
    service = CoordinatorService(CONFIG, coord_host, tmp_path / "journal.jsonl", world.authority).start()
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    for host in nodes:
        host.connect(coord_host.addrs[0])
    time.sleep(1.0)
    yield world, service, nodes
    stop.set()
    thread.join(10)
    service.close()
    for h in [*nodes, coord_host]:
        h.close()


def test_two_nodes_complete_a_round_and_it_is_recorded_on_chain(network):
    world, service, nodes = network
    join(service, nodes)
    start = wait_for(nodes[0], RoundStart)
    assert start.round == 0 and sorted(start.members) == sorted(h.identity.public_key for h in nodes)
    assert {h.identity.public_key for h in nodes} <= service.host.inbox.pinned  # never replayable
    info = wait_for(nodes[0], RunInfo)
    assert "svc-test" in info.config
    for i, host in enumerate(nodes):
        payload = distinct_payload(seed=i, origin=host.identity.public_key)
        digest = host.provide(payload)
        host.publish(
            Commit(
                round=0,
                payload_hash=digest,
                size=len(payload),
                model_hash=H0,
                loss=2.5,
                state_before=FRESH_STATE,
                state_after=H0,
            )
        )
    end = wait_for(nodes[0], RoundEnd)
    assert sorted(end.accepted) == sorted(h.identity.public_key for h in nodes)
    for host in nodes:
        host.publish(Heartbeat(round=0, model_hash=H1))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and world.authority.run(RUN_ID).last_recorded_round != 0:
        time.sleep(0.2)
    assert world.authority.run(RUN_ID).last_recorded_round == 0
    assert [m.points_earned for m in world.authority.members(RUN_ID)] == [20, 20]  # 10 per batch, 2 each
    assert service.state.phase in (Phase.TRAINING, Phase.COOLDOWN)


def test_a_commit_from_a_state_no_accepted_payload_left_is_penalized_and_counted(network):
    _, service, nodes = network
    join(service, nodes)
    wait_for(nodes[0], RoundStart)
    for i, host in enumerate(nodes):
        payload = distinct_payload(seed=i, origin=host.identity.public_key)
        before = FRESH_STATE if i == 0 else H1  # node 1 claims momentum no accepted round left it
        commit = Commit(0, host.provide(payload), len(payload), H0, 2.5, before, H0)
        host.publish(commit)
    end = wait_for(nodes[0], RoundEnd)
    assert (end.accepted, end.penalized) == ([nodes[0].identity.public_key], [nodes[1].identity.public_key])
    assert service.metrics.checks == {"state chain broken": 1}


@pytest.mark.parametrize("stamp", ["next step", "another sender"])
def test_a_payload_stamped_for_another_step_or_sender_is_penalized_and_the_round_ends(network, stamp):
    _, service, nodes = network
    join(service, nodes)
    wait_for(nodes[0], RoundStart)
    honest, cheat = nodes
    bad = (
        distinct_payload(seed=1, origin=cheat.identity.public_key, step=1)
        if stamp == "next step"
        else distinct_payload(seed=1, origin=honest.identity.public_key)
    )
    for host, payload in ((honest, distinct_payload(0, honest.identity.public_key)), (cheat, bad)):
        host.publish(Commit(0, host.provide(payload), len(payload), H0, 2.5, FRESH_STATE, H0))
    end = wait_for(honest, RoundEnd)
    assert (end.accepted, end.penalized) == ([honest.identity.public_key], [cheat.identity.public_key])


def test_a_key_that_is_not_a_member_on_chain_is_refused(network):
    world, service, nodes = network
    stranger = Host(Identity.generate(), CONFIG.run.name).start()
    try:
        stranger.connect(nodes[0].addrs[0])
        time.sleep(0.5)
        stranger.publish(Join(addrs=stranger.addrs))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not service.roster.refused:
            time.sleep(0.1)
        assert service.roster.refused == {"not an active member on chain": 1}
        assert stranger.identity.public_key not in service.state.members
    finally:
        stranger.close()


def test_the_status_page_serves_json_and_prometheus_metrics(network):
    import httpx

    from coordinator.status import StatusServer
    from coordinator.telemetry import snapshot
    from tests.test_node_session import metrics_pass_strict_checks

    world, service, nodes = network
    server = StatusServer(lambda: snapshot(service))
    try:
        status = httpx.get(server.url + "/status.json", timeout=5).json()
        assert status["run"] == "svc-test" and status["phase"] == "waiting"
        metrics = httpx.get(server.url + "/metrics", timeout=5).text
        assert 'eranos_phase{phase="waiting"} 1.0' in metrics and "eranos_members 0.0" in metrics
        assert metrics_pass_strict_checks(server.url + "/metrics")
        assert "<title>eranos run</title>" in httpx.get(server.url + "/", timeout=5).text
        assert httpx.get(server.url + "/nope", timeout=5).status_code == 404
    finally:
        server.close()


def test_a_flood_of_joins_from_unknown_keys_costs_one_table_read_and_rounds_keep_their_deadline(network):
    world, service, nodes = network
    join(service, nodes)
    start = wait_for(nodes[0], RoundStart)
    reads = Counter()
    real_members = service.roster.client.members_of
    service.roster.client.members_of = lambda run: reads.update(["read"]) or real_members(run)
    for _ in range(10_000):  # verified, signed Joins from fresh keys: what an attacker can make freely
        key = Identity.generate().public_key
        service.host.received.put(Envelope(CONFIG.run.name, key, 0, Join(addrs=["/ip4/127.0.0.1/tcp/1"])))
    for i, host in enumerate(nodes):
        payload = distinct_payload(seed=i, origin=host.identity.public_key)
        host.publish(Commit(0, host.provide(payload), len(payload), H0, 2.5, FRESH_STATE, H0))
    end = wait_for(nodes[0], RoundEnd, timeout=30)
    assert time.time() <= start.deadline and sorted(end.accepted) == sorted(
        h.identity.public_key for h in nodes
    )
    assert reads["read"] <= 3  # one table read answers every waiting join
    assert sum(service.roster.refused.values()) >= 10_000 - MAX_PENDING  # the rest wait, bounded


def test_a_member_that_leaves_on_chain_is_removed_after_the_round(network):
    world, service, nodes = network
    join(service, nodes)
    wait_for(nodes[0], RoundStart)
    leaver = nodes[1].identity.public_key
    world.clients[leaver].leave(RUN_ID)
    for i, host in enumerate(nodes):
        payload = distinct_payload(seed=i, origin=host.identity.public_key)
        host.publish(Commit(0, host.provide(payload), len(payload), H0, 2.5, FRESH_STATE, H0))
    wait_for(nodes[0], RoundEnd)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and leaver in service.state.members:
        time.sleep(0.1)
    assert leaver not in service.state.members


def test_the_loop_polls_when_an_event_is_posted_not_at_the_next_tick(tmp_path, monkeypatch):
    monkeypatch.setattr(service_module, "TICK_S", 120.0)
    service = CoordinatorService(CONFIG, Host(COORDINATOR, CONFIG.run.name), tmp_path / "journal.jsonl", None)
    polls: queue.Queue = queue.Queue()
    monkeypatch.setattr(service, "poll", lambda: polls.put(service._events.qsize()))
    stop = threading.Event()
    loop = threading.Thread(target=service.run, args=(stop,))
    loop.start()
    try:
        assert polls.get(timeout=30) == 0  # the first poll, at once
        service._post(PayloadChecked(H0, 0, True))
        assert polls.get(timeout=30) == 1
    finally:
        stop.set()
        service.host.arrived.set()
        loop.join(timeout=30)
        service.close()
