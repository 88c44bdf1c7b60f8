"""Mutation fuzzing of every decoder that reads bytes from a peer, the chain or a file: each input
must decode or raise that decoder's own typed error, within a time bound. Inputs are honest
encodings with random bytes flipped, inserted, deleted or truncated, or random bytes outright.

    python scripts/fuzz_decoders.py --inputs 100000 --json
    python scripts/fuzz_decoders.py --inputs 2000 --only codec --only messages
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from chain.localnet import Localnet  # noqa: E402
from coordinator.journal import decode_entry as decode_journal_entry  # noqa: E402
from coordinator.journal import encode_entry  # noqa: E402
from coordinator.persist import PersistError  # noqa: E402
from coordinator.state import CommitSeen  # noqa: E402
from node.checkpoint import (  # noqa: E402
    CheckpointError,
    read_weights,
    write_weights,  # noqa: E402
)
from node.model import Llama, preset  # noqa: E402
from optim import DemoConfig, DemoOptimizer  # noqa: E402
from optim.codec import TensorPayload, decode, encode  # noqa: E402
from optim.config import ValueMode  # noqa: E402
from optim.errors import PayloadError  # noqa: E402
from optim.spec import ParamSpec  # noqa: E402
from optim.state import StateError, load_state, state_bytes  # noqa: E402
from p2p.identity import Identity  # noqa: E402
from p2p.messages import Commit, Inbox, seal  # noqa: E402
from protocol.run_config import ConfigError, loads  # noqa: E402

SLOW_S = 1.0  # an input that takes longer than this to decode is a finding


def mutate(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 8)):
        kind = rng.random()
        at = rng.randrange(len(data) + 1)
        if kind < 0.4 and data:
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif kind < 0.6:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif kind < 0.8 and data:
            del data[at : at + rng.randint(1, 16)]
        elif kind < 0.9:
            data = data[:at]
        else:
            data = bytearray(rng.randbytes(rng.randint(0, 64)))
    return bytes(data)


def targets() -> dict[str, tuple[bytes, Callable[[bytes], object], tuple[type, ...]]]:
    """name -> (an honest encoding, the decoder, the errors it may raise)."""
    spec = ParamSpec.build([("w", (16, 24)), ("b", (13,))], chunk=8, topk=3, mode=ValueMode.INT8)
    rng = np.random.default_rng(0)
    tensors = [
        TensorPayload(np.arange(ts.groups), np.tile(np.arange(ts.k), (ts.groups, 1)),
                      rng.standard_normal((ts.groups, ts.k)))
        for ts in spec.tensors
    ]  # fmt: skip
    payload = encode(spec, 3, tensors, round=2, origin=bytes(32))
    whole = ParamSpec.build(
        [("w", (16, 24)), ("b", (13,))], chunk=8, topk=3, mode=ValueMode.SIGN, select="tensor"
    )
    tiled = ParamSpec.build(
        [("w", (16, 24)), ("b", (12,))], chunk=8, topk=8, mode=ValueMode.SIGN, select="tensor", tile=2
    )
    params = [("w", torch.nn.Parameter(torch.randn(16, 24)))]
    opt = DemoOptimizer(params, DemoConfig(chunk=8, topk=3, precondition="adam"))
    for _, p in params:
        p.grad = torch.randn_like(p)
    opt.compress()
    state = state_bytes(opt)
    sender = Identity.from_seed(bytes(range(32)))
    message = seal(sender, "r", 1, Commit(1, bytes(32), 10, bytes(32), 2.0, bytes(32), bytes(32)))
    inbox = Inbox("r", window=1 << 30)
    entry = encode_entry(5, CommitSeen(bytes(32), 1, bytes(32), 10, bytes(32), 2.0), 1.5).encode()
    localnet = Localnet()
    rpc = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "getBalance", "params": ["11111111111111111111111111111111"]}
    )
    config = Path(__file__).resolve().parent.parent.joinpath("configs", "sim.toml").read_bytes()
    model = Llama(preset("tiny", n_layers=1, dim=32, n_heads=2, n_kv_heads=1, ffn_dim=64), seed=0)
    scratch = Path(tempfile.mkdtemp()) / "weights.bin"
    write_weights(model, scratch)
    weights = scratch.read_bytes()
    return {
        "payload codec (optim/codec.py)": (payload, lambda b: decode(spec, b), (PayloadError,)),
        "payload codec, top-k over tensors": (
            _every_other_unit(whole),
            lambda b: decode(whole, b),
            (PayloadError,),
        ),
        "payload codec, tiles": (_every_other_unit(tiled), lambda b: decode(tiled, b), (PayloadError,)),
        "optimizer state (optim/state.py)": (state, lambda b: load_state(opt, b), (StateError,)),
        "gossip message (p2p/messages.py)": (message, _inbox(inbox), (Refused,)),
        "journal entry (coordinator/journal.py)": (
            entry,
            lambda b: decode_journal_entry(b.decode("utf-8", "replace")),
            (PersistError,),
        ),
        "JSON-RPC body (chain/localnet.py)": (rpc.encode(), localnet.handle_body, ()),
        "run config (protocol/run_config.py)": (
            config,
            lambda b: loads(b.decode("utf-8", "replace")),
            (ConfigError,),
        ),
        "model weights from a peer (node/checkpoint.py)": (
            weights,
            _weights(model, scratch),
            (CheckpointError,),
        ),
    }


def _every_other_unit(spec: ParamSpec) -> bytes:
    """An honest payload of a spec that selects over whole tensors: units 0, 2, 4, ..., all +1."""
    tensors = [
        TensorPayload(np.zeros(1, np.int64), np.arange(ts.k)[None] * 2, np.ones((1, ts.k * ts.width)))
        for ts in spec.tensors
    ]
    return encode(spec, 3, tensors)


def _weights(model: torch.nn.Module, path: Path) -> Callable[[bytes], object]:
    def load(data: bytes) -> object:
        path.write_bytes(data)
        return read_weights(model, path)

    return load


class Refused(Exception):
    """The inbox refused the message and counted why (its typed outcome: it returns None)."""


def _inbox(inbox: Inbox) -> Callable[[bytes], object]:
    def receive(data: bytes) -> object:
        before = sum(inbox.rejected.values())
        envelope = inbox.receive(data)
        if envelope is None:
            if sum(inbox.rejected.values()) == before:
                raise AssertionError("a refused message was not counted")
            raise Refused
        return envelope

    return receive


def fuzz(name: str, seed: bytes, decoder: Callable, allowed: tuple, inputs: int, rng: random.Random) -> dict:
    outcomes, findings, slowest = Counter(), [], 0.0
    for _ in range(inputs):
        data = mutate(rng, seed)
        started = time.perf_counter()
        try:
            decoder(data)
            outcomes["decoded"] += 1
        except allowed:
            outcomes["typed error"] += 1
        except Exception as exc:  # the finding this script exists for
            outcomes["untyped"] += 1
            if len(findings) < 5:
                findings.append(f"{type(exc).__name__}: {exc} on {data[:40]!r}")
        took = time.perf_counter() - started
        slowest = max(slowest, took)
        outcomes["slow"] += took > SLOW_S
    return {
        "decoder": name,
        "inputs": inputs,
        **outcomes,
        "slowest_s": round(slowest, 4),
        "findings": findings,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--inputs", type=int, default=10_000, help="inputs per decoder")
    p.add_argument("--only", action="append", help="decoders whose name contains this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    rows = [
        fuzz(name, seed, decoder, allowed, args.inputs, rng)
        for name, (seed, decoder, allowed) in targets().items()
        if not args.only or any(o in name for o in args.only)
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        print(
            f"{r['decoder']}: {r['inputs']} inputs, {r.get('decoded', 0)} decoded, "
            f"{r.get('typed error', 0)} typed errors, {r.get('untyped', 0)} untyped, "
            f"{r.get('slow', 0)} slow (slowest {r['slowest_s']} s) {r['findings']}"
        )


if __name__ == "__main__":
    main()
