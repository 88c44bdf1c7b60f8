"""Options from the command line, the environment (ERANOS_<OPTION>) and a TOML file, in that
order of precedence; mistakes are one line."""

from pathlib import Path

import pytest

from node.cli import parse_args

COORDINATOR = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWEffxhcmT9QcHPF3bG9HsnUYML1fcmeSMGZDy38d8NBp1"


def test_an_environment_variable_sets_an_option(monkeypatch):
    monkeypatch.setenv("ERANOS_KEYPAIR", "/keys/id.json")
    monkeypatch.setenv("ERANOS_COORDINATOR", COORDINATOR)
    monkeypatch.setenv("ERANOS_DEVICE", "cpu")
    args = parse_args(["run"])
    assert (
        args.keypair == Path("/keys/id.json") and args.coordinator[0] == COORDINATOR and args.device == "cpu"
    )


def test_the_command_line_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("ERANOS_DEVICE", "cpu")
    args = parse_args(["run", "--keypair", "k.json", "--coordinator", COORDINATOR, "--device", "cuda"])
    assert args.device == "cuda"


def test_a_flag_is_set_by_true_or_false_in_the_environment(monkeypatch):
    monkeypatch.setenv("ERANOS_NO_CHAIN", "true")
    assert parse_args(["run", "--keypair", "k.json", "--coordinator", COORDINATOR]).no_chain is True
    monkeypatch.setenv("ERANOS_NO_CHAIN", "0")
    assert parse_args(["run", "--keypair", "k.json", "--coordinator", COORDINATOR]).no_chain is False


def test_a_bad_environment_value_is_one_line_naming_the_variable(monkeypatch, capsys):
    monkeypatch.setenv("ERANOS_DEVICE", "gpu")
    with pytest.raises(SystemExit) as exc:
        parse_args(["run", "--keypair", "k.json", "--coordinator", COORDINATOR])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and "ERANOS_DEVICE" in err and "'gpu'" in err


def test_a_node_config_file_sets_options_and_the_environment_wins(tmp_path, monkeypatch):
    (tmp_path / "node.toml").write_text(
        f'keypair = "/keys/id.json"\ncoordinator = "{COORDINATOR}"\ndevice = "cuda"\n'
        'announce = ["/ip4/203.0.113.7/tcp/4002"]\n'
    )
    monkeypatch.setenv("ERANOS_DEVICE", "cpu")
    args = parse_args(["run", "--node-config", str(tmp_path / "node.toml")])
    assert args.keypair == Path("/keys/id.json") and args.device == "cpu"
    assert args.announce == ["/ip4/203.0.113.7/tcp/4002"]


def test_an_unknown_key_in_the_node_config_is_one_line(tmp_path, capsys):
    (tmp_path / "node.toml").write_text('keypiar = "id.json"\n')
    with pytest.raises(SystemExit):
        parse_args(["run", "--node-config", str(tmp_path / "node.toml")])
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "unknown option 'keypiar'" in err


@pytest.mark.parametrize(
    ("device", "expected"),
    [("cdua", "did you mean 'cuda'?"), ("tpu", "unknown device 'tpu'")],
)
def test_a_typo_in_the_device_is_one_line(device, expected, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(["run", "--keypair", "k.json", "--coordinator", COORDINATOR, "--device", device])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and expected in err


def test_a_plain_host_and_port_for_the_coordinator_says_the_form(capsys):
    with pytest.raises(SystemExit):
        parse_args(["run", "--keypair", "k.json", "--coordinator", "10.0.0.5:4001"])
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "'10.0.0.5:4001' is not a multiaddr" in err and "/p2p/" in err


def test_a_repeatable_option_takes_a_comma_separated_list_from_the_environment(monkeypatch):
    from scripts.sim_args import parse_args as sim_args

    monkeypatch.setenv("ERANOS_KILL", "1@3,2@5")
    assert sim_args([]).kills == {1: 3, 2: 5}


def test_a_repeatable_option_takes_a_comma_separated_list_on_the_command_line_too():
    from scripts.sim_args import parse_args as sim_args

    assert sim_args(["--nodes", "8", "--kill", "0@3,1@3", "--kill", "2@4"]).kills == {0: 3, 1: 3, 2: 4}
