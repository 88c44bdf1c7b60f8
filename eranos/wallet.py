"""`eranos keygen` and `eranos airdrop`: a key to act with, and SOL to pay with on a local chain.

eranos keygen -o id.json             # a new solana-keygen JSON keypair; refuses to overwrite
eranos keygen --pubkey id.json       # its public key (a coordinator's: the run's authority)
eranos keygen --peer-id id.json      # its libp2p peer id (the /p2p/ part of its multiaddr)
eranos airdrop 10 --keypair id.json  # 10 SOL from the chain's faucet (localnet, test validators)
eranos airdrop 1 --to <pubkey>
"""

from __future__ import annotations

import argparse
from pathlib import Path

from solders.keypair import Keypair

from chain.client import RpcTransport
from chain.errors import ChainError
from chain.keys import load_keypair, parse_pubkey, save_keypair
from chain.units import parse_sol, sol
from p2p.identity import Identity
from protocol.console import HelpFormatter, Parser, arg_type, read_environment

DEFAULT_RPC = "http://127.0.0.1:8899"


def keygen_parser(prog: str) -> argparse.ArgumentParser:
    p = Parser(
        prog=prog,
        description="Write a new keypair in solana-keygen's JSON format.",
        formatter_class=HelpFormatter,
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("-o", "--outfile", type=Path, help="where to write a new keypair")
    what.add_argument("--pubkey", type=Path, metavar="FILE", help="print this keypair's public key")
    what.add_argument("--peer-id", type=Path, metavar="FILE", help="print this keypair's libp2p peer id")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    read_environment(p)
    return p


def keygen(argv: list[str] | None = None, prog: str = "eranos keygen") -> None:
    args = keygen_parser(prog).parse_args(argv)
    if args.outfile is None:
        try:
            keypair = load_keypair(args.pubkey or args.peer_id)
        except ValueError as exc:
            raise SystemExit(f"{prog}: {exc}") from None
        print(keypair.pubkey() if args.pubkey else Identity.from_seed(bytes(keypair)[:32]).peer_id)
        return
    if args.outfile.exists() and not args.force:
        raise SystemExit(f"{prog}: {args.outfile} exists; refusing to overwrite it (--force to replace it)")
    keypair = Keypair()
    try:
        save_keypair(keypair, args.outfile)
    except OSError as exc:
        raise SystemExit(f"{prog}: cannot write {args.outfile}: {exc.strerror}") from None
    identity = Identity.from_seed(bytes(keypair)[:32])
    print(f"Wrote new keypair to {args.outfile}")
    print(f"pubkey: {keypair.pubkey()}")
    print(f"peer id: {identity.peer_id}")


def airdrop_parser(prog: str) -> argparse.ArgumentParser:
    p = Parser(
        prog=prog,
        description="Request SOL from the chain's faucet (a local chain or a test cluster).",
        formatter_class=HelpFormatter,
    )
    p.add_argument("amount", type=arg_type(parse_sol), help="SOL to request, e.g. 10 or 0.5")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--keypair", type=Path, help="fund this keypair's key")
    who.add_argument("--to", type=arg_type(parse_pubkey), help="fund this public key")
    p.add_argument("--rpc", default=DEFAULT_RPC, help="Solana JSON-RPC URL")
    read_environment(p)
    return p


def airdrop(argv: list[str] | None = None, prog: str = "eranos airdrop") -> None:
    p = airdrop_parser(prog)
    args = p.parse_args(argv)
    if args.to is None and args.keypair is None:
        p.error("say whom to fund: --keypair FILE or --to PUBKEY")
    try:
        key = args.to or load_keypair(args.keypair).pubkey()
    except ValueError as exc:
        raise SystemExit(f"{prog}: {exc}") from None
    transport = RpcTransport(args.rpc)
    try:
        transport.airdrop(key, args.amount)
        balance = transport.balance(key)
    except ChainError as exc:
        raise SystemExit(f"{prog}: {exc} (airdrops exist on local chains and test clusters only)") from None
    print(f"{key}: received {sol(args.amount)}, balance {sol(balance)}")
