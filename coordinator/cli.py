"""`eranos coordinator`: run the rounds of one run.

    eranos coordinator --config run.toml --keypair coordinator.json [--listen MULTIADDR]
                      [--journal FILE] [--http HOST:PORT] [--rpc URL | --no-chain] [-v]

A bad config value or flag is refused at start, naming it. An unreachable RPC endpoint is
reported and retried until it answers (Ctrl-C stops). A restart with the same journal resumes
the run without recording any round twice.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from dataclasses import asdict, replace
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from chain.client import EranosClient
from chain.errors import ChainError, RpcUnavailable
from chain.keys import load_keypair
from coordinator import membership
from coordinator.service import CoordinatorService, starting_weights
from coordinator.status import StatusServer
from coordinator.telemetry import snapshot
from node.checkpoint import load_model, model_hash, write_weights
from node.run_data import shard_store
from p2p.addresses import parse_announce, parse_listen
from p2p.errors import LocalError
from p2p.host import Host
from p2p.identity import Identity
from protocol.console import HelpFormatter, Parser, arg_type, read_environment, setup_logging
from protocol.events import EventLog
from protocol.run_config import ConfigError, RunConfig, load
from protocol.usage import USAGE, write_usage

listen_addr, announce_addrs = arg_type(parse_listen), arg_type(parse_announce)
log = logging.getLogger("eranos.coordinator")
RPC_RETRY_S = 5.0
DEFAULT_LISTEN = "/ip4/0.0.0.0/tcp/4001"


def parse_args(argv: list[str] | None, prog: str = "eranos coordinator") -> argparse.Namespace:
    p = Parser(prog=prog, description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--config", required=True, type=Path, help="the run config (TOML)")
    p.add_argument(
        "--keypair", required=True, type=Path, help="solana-keygen JSON keypair: the run's authority"
    )
    p.add_argument("--listen", default=DEFAULT_LISTEN, type=listen_addr, help="p2p listen multiaddr")
    p.add_argument(
        "--announce",
        type=announce_addrs,
        help="multiaddrs nodes dial, comma-separated (default: derived)",
    )
    p.add_argument("--journal", type=Path, default=Path("eranos-journal.jsonl"), help="journal file")
    p.add_argument(
        "--events", type=Path, default=Path("eranos-events.jsonl"), help="event log (for eranos timeline)"
    )
    p.add_argument("--http", default="127.0.0.1:8080", help="status page HOST:PORT ('off' to disable)")
    p.add_argument("--rpc", help="Solana JSON-RPC URL (overrides the config's run.rpc)")
    p.add_argument("--no-chain", action="store_true", help="run without recording rounds on chain")
    p.add_argument("--no-live", action="store_true", help="no live status view (logs only)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logs")
    read_environment(p)
    return p.parse_args(argv)


def http_address(value: str) -> tuple[str, int] | None:
    if value == "off":
        return None
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"--http must be HOST:PORT or 'off', got {value!r}")
    return host, int(port)


def wait_for_chain(client: EranosClient, run_id: int, stop: threading.Event) -> bool:
    """Block until the run is readable on chain; False if stopped first."""
    while not stop.is_set():
        try:
            run = client.run(run_id)
        except RpcUnavailable as exc:
            log.error("%s; retrying in %.0f s", exc, RPC_RETRY_S)
            stop.wait(RPC_RETRY_S)
            continue
        if run.authority != client.key:
            raise SystemExit(
                f"eranos coordinator: {client.key} is not the authority of run {run_id} ({run.authority})"
            )
        return True
    return False


def with_starting_model(config: RunConfig, journal: Path) -> RunConfig:
    """A run that starts from a Hugging Face directory (`model.path`): its architecture and the
    hash of its weights go into the config nodes receive (a pinned hash must match), and the
    weights into the file the service serves them from."""
    if not config.model.path:
        return config
    model = load_model(config.model.path)  # CheckpointError (a ValueError) names what is wrong
    digest = model_hash(model)
    if config.model.hash and config.model.hash != digest:
        raise ConfigError(
            f"model.hash {config.model.hash} is not the hash of {config.model.path}'s weights, {digest}"
        )
    write_weights(model, starting_weights(journal))
    architecture = json.dumps(asdict(model.config), sort_keys=True)
    return replace(config, model=replace(config.model, hash=digest, architecture=architecture))


def check_data(config: RunConfig) -> None:
    """When this coordinator serves the run's shards, check every one against the pinned manifest
    and the model before any node trains on them (ShardError, a ValueError, names the shard)."""
    if not config.data.manifest or not Path(config.data.manifest).is_file():
        return
    store = shard_store(config)
    gb = store.manifest.total_tokens * (2 if store.manifest.dtype == "uint16" else 4) / 1e9
    print(f"checking the run's {len(store.manifest.shards)} shards ({gb:.2f} GB)", flush=True)
    store.check_all()


def status_table(snap: dict) -> Table:
    table = Table(title=f"eranos coordinator: {snap['run']}", show_header=False)
    for key in (
        "phase",
        "why",
        "round",
        "finalized_rounds",
        "members",
        "ready_members",
        "loss",
        "bytes_per_step",
        "penalties",
        "chain_recorded",
        "chain_pending",
        "chain_last_error",
    ):
        value = snap.get(key)
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    return table


def main(argv: list[str] | None = None, prog: str = "eranos coordinator") -> None:
    args = parse_args(argv, prog)
    setup_logging(args.verbose)
    try:
        config = load(args.config)
        if args.rpc:
            config = replace(config, run=replace(config.run, rpc=args.rpc))
            config.check()
        config = with_starting_model(config, args.journal)
        check_data(config)
        keypair = load_keypair(args.keypair)
        http = http_address(args.http)
    except (ConfigError, ValueError) as exc:
        raise SystemExit(f"eranos coordinator: {exc}") from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    client = None if args.no_chain else EranosClient.connect(config.run.rpc, keypair)
    try:
        if client is not None and not wait_for_chain(client, config.run.chain_run_id, stop):
            return
    except (ChainError, LookupError) as exc:
        raise SystemExit(
            f"eranos coordinator: run {config.run.chain_run_id} on {config.run.rpc}: {exc}"
        ) from None
    identity = Identity.from_seed(bytes(keypair)[:32])
    try:
        host = Host(
            identity, config.run.name, listen=args.listen, announce=args.announce or (), hub=True
        ).start()
    except LocalError as exc:
        raise SystemExit(
            f"eranos coordinator: {exc}; pick another port with --listen /ip4/0.0.0.0/tcp/PORT"
        ) from None
    events = EventLog(args.events, "coordinator")
    service = CoordinatorService(config, host, args.journal, client, events=events).start()
    server = StatusServer(lambda: snapshot(service), *http) if http else None
    print(f"coordinator {identity.address} of run {config.run.name!r}; nodes join with", flush=True)
    for addr in host.addrs:
        print(f"  --coordinator {addr}", flush=True)
    if server:
        print(f"status: {server.url}/status.json  metrics: {server.url}/metrics", flush=True)
    if service.data_files:
        print(f"serving the run's data to nodes: {service.data_files} files", flush=True)

    def serve() -> None:
        try:
            service.run(stop)
        except Exception:  # a bug must stop the process loudly, not leave a silent husk
            log.exception("the coordinator loop failed")
            failed.set()
            stop.set()

    failed = threading.Event()
    worker = threading.Thread(target=serve, name="coordinator", daemon=True)
    worker.start()
    try:
        if args.no_live or not sys.stdout.isatty():
            said = ""
            while not stop.wait(1.0):
                why = membership.why(service.state)
                if why and why != said and not why.startswith("warming"):
                    finished = service.state.phase.value == "finished"
                    print(why + ("; Ctrl-C to stop" if finished else ""), flush=True)
                said = why
        else:
            with Live(status_table(snapshot(service)), console=Console(), refresh_per_second=2) as live:
                while not stop.wait(0.5):
                    live.update(status_table(snapshot(service)))
    finally:
        stop.set()
        worker.join(10)
        service.close()
        events.close()
        if server:
            server.close()
        write_usage(args.journal.with_name(USAGE), host.traffic, host.messages)
        host.close()
    if failed.is_set():
        raise SystemExit(1)


if __name__ == "__main__":
    main()
