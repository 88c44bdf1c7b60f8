"""The one `eranos` command: subcommands, their own help with defaults, and a light top level."""

import subprocess
import sys

from eranos import __version__

ROOT = __file__.rsplit("/tests/", 1)[0]


def eranos(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "eranos", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_version_prints_the_package_version():
    out = eranos("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"eranos {__version__}"


def test_help_lists_every_subcommand():
    out = eranos("--help")
    assert out.returncode == 0
    for name in ("node", "coordinator", "localnet", "sim"):
        assert f"\n    {name}" in out.stdout


def test_help_and_version_import_no_heavy_library():
    code = (
        "import sys\n"
        "from eranos.cli import main\n"
        "for argv in (['--help'], ['--version']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('torch', 'libp2p', 'solana', 'solders', 'anchorpy') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert "HEAVY []" in out.stderr


def test_a_mistyped_command_is_refused_with_a_suggestion():
    out = eranos("nod")
    assert out.returncode == 2
    assert out.stderr.strip() == "eranos: no command 'nod'; did you mean 'node'? (eranos --help lists them)"


def test_node_status_help_lists_only_its_own_options():
    out = eranos("node", "status", "--help")
    assert out.returncode == 0
    assert "--run-id" in out.stdout and "--coordinator" not in out.stdout and "--workdir" not in out.stdout


def test_node_run_help_shows_defaults():
    out = eranos("node", "run", "--help")
    assert out.returncode == 0 and "--run-id" not in out.stdout
    text = " ".join(out.stdout.split())
    assert "(default: auto)" in text and "(default: eranos-node-<key>)" in text
    assert "[env ERANOS_DEVICE]" in text and "(default: /ip4/0.0.0.0/tcp/4002)" in text


def test_coordinator_help_shows_its_journal_default():
    out = eranos("coordinator", "--help")
    assert out.returncode == 0 and "(default: eranos-journal.jsonl)" in out.stdout
    assert "--workdir" not in out.stdout


def test_localnet_help_shows_its_port_default():
    out = eranos("localnet", "--help")
    assert out.returncode == 0 and "(default: 8899)" in out.stdout


def test_sim_help_shows_node_and_round_defaults():
    out = eranos("sim", "--help")
    assert out.returncode == 0 and "(default: 4)" in out.stdout and "(default: 20)" in out.stdout
