"""eranos localnet: JSON-RPC semantics, persistence, the CLI, and a real validator when present."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from solders.keypair import Keypair

from chain import instructions as ixs
from chain.client import EranosClient, RpcTransport
from chain.errors import ProgramError, RpcError, RpcUnavailable
from chain.localnet import Localnet
from chain.state import Mode, RunParams
from chain.svm import MAX_HISTORY, ProgramSvm
from tests.chain_world import RUN_ID, SOL, World

ROOT = bytes(32)


@pytest.fixture
def localnet():
    net = Localnet()
    server = net.serve()
    yield net, server.url
    server.close()


def rpc(url, method, params=None, rid=1):
    body = {"jsonrpc": "2.0", "id": rid, "method": method, "params": params or []}
    return httpx.post(url, json=body, timeout=10).json()


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000 + b"]" * 100_000, b'{"id": ' + b"9" * 5000 + b"}"],
    ids=["nested 100,000 deep", "a 5,000-digit integer"],
)
def test_json_that_python_cannot_hold_is_a_parse_error_not_an_internal_one(localnet, body):
    _, url = localnet
    reply = httpx.post(url, content=body, headers={"Content-Type": "application/json"}, timeout=10)
    assert reply.json()["error"]["code"] == -32700


def test_a_malformed_blockhash_is_an_invalid_params_error(localnet):
    _, url = localnet
    assert rpc(url, "isBlockhashValid", ["not-a-hash"])["error"]["code"] == -32602


def test_a_malformed_content_length_gets_a_reply_and_the_server_keeps_serving(localnet):
    _, url = localnet
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n")
        assert conn.recv(100).startswith(b"HTTP/1.0 400")
    assert "result" in rpc(url, "getHealth")


def test_the_transaction_history_is_bounded():
    assert MAX_HISTORY == 10_000
    svm = ProgramSvm(max_history=10)
    signatures = [svm.airdrop(Keypair().pubkey(), 1) for _ in range(15)]
    assert list(svm.history) == signatures[5:]


def test_an_unknown_method_is_a_method_not_found_error(localnet):
    _, url = localnet
    assert rpc(url, "getEverything")["error"]["code"] == -32601


def test_an_unparseable_body_is_a_parse_error(localnet):
    _, url = localnet
    reply = httpx.post(url, content=b"{not json", headers={"Content-Type": "application/json"}, timeout=10)
    assert reply.json()["error"]["code"] == -32700


def test_bad_params_are_an_invalid_params_error(localnet):
    _, url = localnet
    assert rpc(url, "getBalance", ["not-a-pubkey"])["error"]["code"] == -32602
    assert rpc(url, "getBalance", {"pubkey": "x"})["error"]["code"] == -32602
    assert rpc(url, "sendTransaction", ["AAAA", {"encoding": "base64"}])["error"]["code"] == -32602


def test_an_oversized_body_is_refused_before_it_is_read(localnet):
    _, url = localnet
    reply = httpx.post(url, content=b" " * (2 << 20), timeout=10)
    assert reply.status_code == 413


def test_commitment_parameters_are_accepted(localnet):
    _, url = localnet
    key = str(Keypair().pubkey())
    for commitment in ("processed", "confirmed", "finalized"):
        assert rpc(url, "getBalance", [key, {"commitment": commitment}])["result"]["value"] == 0


def test_a_batch_gets_one_reply_per_request(localnet):
    _, url = localnet
    batch = [{"jsonrpc": "2.0", "id": i, "method": m} for i, m in enumerate(["getHealth", "getSlot", "nope"])]
    replies = httpx.post(url, json=batch, timeout=10).json()
    assert [r["id"] for r in replies] == [0, 1, 2]
    assert replies[0]["result"] == "ok" and replies[2]["error"]["code"] == -32601


def test_a_failed_preflight_returns_the_program_error_with_its_logs(localnet):
    net, url = localnet
    world = World(svm=net.svm, rpc_url=url)
    world.permissioned(1)
    world.authority.record_round(RUN_ID, 3, ROOT, contributed=[0])
    with pytest.raises(ProgramError) as info:
        world.authority.record_round(RUN_ID, 3, ROOT, contributed=[0])
    assert info.value.code == 6022 and info.value.name == "RoundNotIncreasing"
    assert any("RoundNotIncreasing" in line for line in info.value.logs)


def test_unknown_signatures_have_no_status(localnet):
    _, url = localnet
    sig = str(Keypair().sign_message(b"x"))
    assert rpc(url, "getSignatureStatuses", [[sig]])["result"]["value"] == [None]


def test_token_balances_are_served(localnet):
    net, url = localnet
    world = World(svm=net.svm, rpc_url=url)
    (node,) = world.permissioned(1)
    world.authority.record_round(RUN_ID, 1, ROOT, contributed=[0])
    node.claim(RUN_ID)
    assert node.token_balance(RUN_ID) == 10


def test_accounts_survive_a_save_and_restore(localnet, tmp_path):
    net, url = localnet
    world = World(svm=net.svm, rpc_url=url)
    (node,) = world.permissioned(1)
    world.authority.record_round(RUN_ID, 1, ROOT, contributed=[0])
    net.save(tmp_path / "state.json")
    restored = Localnet()
    restored.restore(tmp_path / "state.json")
    server = restored.serve()
    try:
        reader = EranosClient(RpcTransport(server.url), Keypair(), authority=world.authority.key)
        assert reader.run(RUN_ID).last_recorded_round == 1
        assert reader.member(RUN_ID, node.key).points_earned == 10
        assert reader.balance(node.key) == node.balance()
    finally:
        server.close()


def test_an_unreachable_endpoint_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = EranosClient(RpcTransport(f"http://127.0.0.1:{port}", timeout_s=2), Keypair())
    with pytest.raises(RpcUnavailable, match=f"127.0.0.1:{port}"):
        client.run(RUN_ID)


def test_a_json_rpc_error_is_typed(localnet):
    _, url = localnet
    with pytest.raises(RpcError, match="requestAirdrop"):
        EranosClient(RpcTransport(url), Keypair()).airdrop(0)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url, proc, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        try:
            if rpc(url, "getHealth").get("result") == "ok":
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not come up within {seconds} s")


def test_the_cli_serves_and_saves_its_state_on_sigterm(tmp_path):
    port, state = _free_port(), tmp_path / "ledger.json"
    cmd = [sys.executable, "-m", "eranos", "localnet", "--port", str(port), "--state", str(state)]
    proc = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()}
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        client = EranosClient(RpcTransport(url), Keypair())
        client.airdrop(SOL)
        client.create_run(RUN_ID, Mode.PERMISSIONED, RunParams())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    saved = json.loads(state.read_text())
    assert str(client.key) in saved["accounts"]
    assert str(ixs.run_address(RUN_ID, client.key)[0]) in saved["accounts"]


@pytest.mark.skipif(
    shutil.which("solana-test-validator") is None, reason="solana-test-validator is not on PATH"
)
def test_the_client_works_against_solana_test_validator(tmp_path):
    from chain import spec
    from chain.svm import PROGRAM_PATH

    port = _free_port()
    cmd = [
        "solana-test-validator",
        "--reset",
        "--quiet",
        "--ledger",
        str(tmp_path / "ledger"),
        "--rpc-port",
        str(port),
        "--bpf-program",
        spec.PROGRAM_ID,
        str(PROGRAM_PATH),
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, seconds=120)
        authority = EranosClient(RpcTransport(url), Keypair())
        authority.airdrop(10 * SOL)
        authority.create_run(RUN_ID, Mode.PERMISSIONED, RunParams(10, 2))
        node = EranosClient(RpcTransport(url), Keypair(), authority=authority.key)
        node.airdrop(SOL)
        authority.authorize(RUN_ID, node.key)
        node.join(RUN_ID)
        authority.record_round(RUN_ID, 1, ROOT, contributed=[0])
        assert node.claim(RUN_ID) == 10 and node.token_balance(RUN_ID) == 10
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_multiple_accounts_come_back_in_order_with_null_for_missing(localnet):
    net, url = localnet
    world = World(svm=net.svm, rpc_url=url)
    world.permissioned()
    run = world.authority.run(RUN_ID)
    keys = [str(run.address), str(Keypair().pubkey()), str(run.mint)]
    value = rpc(url, "getMultipleAccounts", [keys, {"encoding": "base64"}])["result"]["value"]
    assert value[1] is None
    assert value[0]["owner"] == str(net.svm.program_id) and value[0]["space"] == 2040  # the Run account
    assert value[2]["space"] == 82


def test_simulation_reports_units_and_changes_nothing(localnet):
    net, url = localnet
    world = World(svm=net.svm, rpc_url=url)
    world.permissioned(1)
    tx = world.authority.transaction(
        [world.authority.record_round_instruction(world.authority.run(RUN_ID), 1, ROOT, [0], [], [])]
    )
    assert world.transport.simulate_units(tx) > 0
    assert world.authority.run(RUN_ID).last_recorded_round is None


_FUZZ_NET = Localnet()


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
            ),
            max_leaves=12,
        ).map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {
                "jsonrpc": st.just("2.0"),
                "id": st.integers(),
                "method": st.sampled_from(sorted(Localnet().methods)),
                "params": st.lists(
                    st.one_of(
                        st.integers(),
                        st.text(max_size=50),
                        st.none(),
                        st.dictionaries(
                            st.sampled_from(["encoding", "commitment", "skipPreflight"]), st.text(max_size=10)
                        ),
                    ),
                    max_size=3,
                ),
            }
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_any_request_body_gets_a_json_rpc_reply(body):
    reply = json.loads(_FUZZ_NET.handle_body(body))
    replies = reply if isinstance(reply, list) else [reply]
    for r in replies:
        assert r["jsonrpc"] == "2.0" and (
            "result" in r or r["error"]["code"] in (-32700, -32600, -32601, -32602, -32002, -32603)
        )
