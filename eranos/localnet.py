"""`eranos localnet`: Solana JSON-RPC on a port of this machine over an in-process LiteSVM with
the eranos program deployed (chain/localnet.py), for local runs and tests.

`--state FILE` restores accounts at start and saves them on exit, so a local chain survives
restarts.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

from chain import spec
from chain.localnet import Localnet
from protocol.console import HelpFormatter, Parser, read_environment

log = logging.getLogger("eranos.localnet")


def main(argv: list[str] | None = None, prog: str = "eranos localnet") -> None:
    parser = Parser(prog=prog, description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="listen address")
    parser.add_argument("--port", type=int, default=8899, help="listen port")
    parser.add_argument(
        "--state", type=Path, help="restore accounts from this file at start, save them on exit"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request and transaction")
    read_environment(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    localnet = Localnet()
    if args.state and args.state.exists():
        try:
            log.info("restored %d accounts from %s", localnet.restore(args.state), args.state)
        except (OSError, ValueError, KeyError) as exc:
            parser.exit(2, f"{prog}: --state {args.state}: {exc}\n")
    try:
        server = localnet.serve(args.host, args.port)
    except OSError as exc:
        parser.exit(2, f"{prog}: cannot listen on {args.host}:{args.port}: {exc}\n")
    log.info("serving %s (program %s)", server.url, spec.PROGRAM_ID)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.close()
    if args.state:
        localnet.save(args.state)
        log.info("saved state to %s", args.state)
