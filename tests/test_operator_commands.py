"""The operator's commands against a local chain: keygen, airdrop, run create|update|show, and a
member's status, leave and withdraw. Every mistake is one line and a non-zero exit."""

import json

import pytest

from chain.client import EranosClient
from chain.keys import load_keypair
from chain.localnet import Localnet
from chain.state import MemberStatus
from eranos.cli import main as eranos
from tests.chain_world import SOL

RUN = """
[run]
name = "ops"
chain_run_id = 7

[chain]
stake_sol = 0.25
slash_sol = 0.1
points_per_batch = 5
points_per_validation = 3
unbonding_s = 120
"""


@pytest.fixture
def chain():
    net = Localnet()
    server = net.serve("127.0.0.1", 0)
    yield net, server.url
    server.close()


@pytest.fixture
def files(tmp_path, chain):
    _, url = chain
    (tmp_path / "run.toml").write_text(RUN)
    eranos(["keygen", "-o", str(tmp_path / "authority.json")])
    return tmp_path, url


def run_cmd(*args: str) -> None:
    eranos([str(a) for a in args])


def one_line_exit(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exc:
        run_cmd(*args)
    message = exc.value.code if isinstance(exc.value.code, str) else capsys.readouterr().err
    assert exc.value.code != 0
    assert len(message.strip().splitlines()) == 1 and "Traceback" not in message
    return message


def test_keygen_writes_a_solana_keygen_keypair_and_prints_its_key(tmp_path, capsys):
    run_cmd("keygen", "-o", tmp_path / "id.json")
    out = capsys.readouterr().out
    keypair = load_keypair(tmp_path / "id.json")
    assert f"pubkey: {keypair.pubkey()}" in out and "peer id: 12D3KooW" in out
    raw = json.loads((tmp_path / "id.json").read_text())
    assert len(raw) == 64 and (tmp_path / "id.json").stat().st_mode & 0o077 == 0


def test_keygen_refuses_to_overwrite_a_key(tmp_path, capsys):
    run_cmd("keygen", "-o", tmp_path / "id.json")
    before = (tmp_path / "id.json").read_bytes()
    message = one_line_exit(capsys, "keygen", "-o", tmp_path / "id.json")
    assert "refusing to overwrite" in message and (tmp_path / "id.json").read_bytes() == before


def test_airdrop_funds_a_keypair_and_shows_sol(files, capsys):
    tmp, url = files
    run_cmd("airdrop", "2.5", "--keypair", tmp / "authority.json", "--rpc", url)
    assert "received 2.5 SOL, balance 2.5 SOL" in capsys.readouterr().out


def test_airdrop_of_a_malformed_amount_is_one_line(files, capsys):
    tmp, url = files
    message = one_line_exit(capsys, "airdrop", "lots", "--keypair", tmp / "authority.json", "--rpc", url)
    assert "not an amount of SOL" in message


def test_creating_a_run_with_an_unfunded_authority_says_to_fund_it(files, capsys):
    tmp, url = files
    message = one_line_exit(capsys, "run", "create", *run_flags(tmp, url))
    assert "holds 0 SOL" in message and "eranos airdrop" in message


def run_flags(tmp, url) -> list:
    return ["--config", tmp / "run.toml", "--keypair", tmp / "authority.json", "--rpc", url]


def create(tmp, url):
    run_cmd("airdrop", "10", "--keypair", tmp / "authority.json", "--rpc", url)
    run_cmd("run", "create", *run_flags(tmp, url))


def test_run_create_writes_the_chain_section_on_chain(files, capsys):
    tmp, url = files
    create(tmp, url)
    out = capsys.readouterr().out
    assert "created run 7 (permissionless)" in out
    assert "stake 0.25 SOL, slash 0.1 SOL, 5 tokens per batch, 3 tokens per check, unbonding 120 s" in out
    params = client(tmp, url, "authority.json").run(7).params
    assert (params.required_stake, params.slash_amount) == (SOL // 4, SOL // 10)
    assert (params.points_per_contribution, params.points_per_validation, params.unbonding_seconds) == (
        5,
        3,
        120,
    )


def test_creating_a_run_twice_is_refused_in_one_line(files, capsys):
    tmp, url = files
    create(tmp, url)
    message = one_line_exit(capsys, "run", "create", *run_flags(tmp, url))
    assert "already exists" in message and "eranos run update" in message


def test_run_update_defers_new_params_and_pauses(files, capsys):
    tmp, url = files
    create(tmp, url)
    (tmp / "run.toml").write_text(RUN.replace("slash_sol = 0.1", "slash_sol = 0.2"))
    run_cmd(
        "run",
        "update",
        *run_flags(tmp, url),
        "--pause",
    )
    out = capsys.readouterr().out
    assert "run 7 paused" in out and "new params take effect at" in out
    run_cmd("run", "show", *run_flags(tmp, url))
    shown = capsys.readouterr().out
    assert "(permissionless, paused)" in shown and "pending from" in shown and "slash 0.2 SOL" in shown


def test_run_update_cannot_change_the_mode(files, capsys):
    tmp, url = files
    create(tmp, url)
    (tmp / "run.toml").write_text(RUN.replace("[chain]", '[chain]\nmode = "permissioned"'))
    message = one_line_exit(capsys, "run", "update", *run_flags(tmp, url))
    assert "cannot change after creation" in message


def test_showing_a_run_that_does_not_exist_is_one_line(files, capsys):
    tmp, url = files
    message = one_line_exit(capsys, "run", "show", *run_flags(tmp, url))
    assert "run 7 does not exist" in message


def client(tmp, url, keyfile: str) -> EranosClient:
    authority = load_keypair(tmp / "authority.json").pubkey()
    return EranosClient.connect(url, load_keypair(tmp / keyfile), authority=authority)


def member(tmp, url, capsys):
    """A funded node key that joined run 7 (as `eranos node run` does before training)."""
    create(tmp, url)
    run_cmd("keygen", "-o", tmp / "node.json")
    run_cmd("airdrop", "1", "--keypair", tmp / "node.json", "--rpc", url)
    client(tmp, url, "node.json").join(7)
    authority = client(tmp, url, "node.json").authority
    capsys.readouterr()
    return ["--keypair", tmp / "node.json", "--rpc", url, "--run-id", "7", "--authority", str(authority)]


def test_node_status_shows_stake_in_sol_and_points_in_tokens(files, capsys):
    tmp, url = files
    flags = member(tmp, url, capsys)
    run_cmd("node", "status", *flags)
    out = capsys.readouterr().out
    assert "active in run 7" in out and "stake 0.25 SOL" in out and "points 0 tokens" in out


def test_node_status_of_an_unknown_run_is_one_line(files, capsys):
    tmp, url = files
    flags = member(tmp, url, capsys)
    flags[flags.index("7")] = "99"
    message = one_line_exit(capsys, "node", "status", *flags)
    assert "run 99 does not exist" in message


def test_leave_then_withdraw_waits_for_the_chain_clock(files, chain, capsys):
    tmp, url = files
    net, _ = chain
    net.svm.set_time(1_000)
    flags = member(tmp, url, capsys)
    run_cmd("node", "leave", *flags)
    assert "left run 7" in capsys.readouterr().out
    message = one_line_exit(capsys, "node", "withdraw", *flags)
    assert "unbonding until" in message and "then 'eranos node withdraw'" in message
    net.svm.set_time(1_000 + 121)
    run_cmd("node", "withdraw", *flags)
    assert "withdrew 0.25 SOL" in capsys.readouterr().out
    node = client(tmp, url, "node.json")
    assert node.member(7, node.key).status == MemberStatus.LEFT and node.member(7, node.key).stake == 0


def test_withdrawing_while_still_a_member_says_to_leave_first(files, capsys):
    tmp, url = files
    flags = member(tmp, url, capsys)
    message = one_line_exit(capsys, "node", "withdraw", *flags)
    assert "leave run 7 first" in message
