"""Protocol messages: versioned msgpack maps, signed by the sender over a canonical encoding.

Wire form of every gossip message:

    {"v": 1, "run": str, "type": str, "from": 32-byte ed25519 key, "seq": int, "body": map, "sig": 64 bytes}

The signature covers msgpack([v, run, type, from, seq, body]) with every map's keys sorted, so
any receiver re-derives the signed bytes from what it decoded. `open_message` checks, in order
and before acting on anything: size, decoding (with msgpack's length limits), version, run id,
signature, type, and the body's exact fields and types. Replays are the `Inbox`'s job, since
they need state. Every failure is a `MessageError` subclass naming its reason.

Bodies hold only ints, finite floats, bools, strings, 32-byte keys and hashes, and lists and
maps of those; every `bytes` field is exactly 32 bytes.
"""

import math
import types
import typing
from collections import Counter
from dataclasses import dataclass, fields
from typing import Any

import msgpack

from p2p.errors import (
    BadSignature,
    InvalidBody,
    MalformedMessage,
    MessageError,
    OversizedMessage,
    ReplayedMessage,
    UnknownType,
    UnsupportedVersion,
    WrongRun,
)
from p2p.identity import Identity, verify

VERSION = 1
MAX_MESSAGE_BYTES = 256 * 1024  # a RoundStart for 1024 members fits; libp2p drops gossip over 1 MiB
KEY = 32
FRESH_STATE = bytes(KEY)  # Commit.state_before of a node whose optimizer state is all zeros


@dataclass(frozen=True)
class Join:
    addrs: list[str]  # multiaddrs this node listens on
    hardware: str = ""  # what it trains on, in its own words (shown, never trusted)


@dataclass(frozen=True)
class Heartbeat:
    round: int
    model_hash: bytes


@dataclass(frozen=True)
class RoundStart:
    round: int
    step: int
    seed: int
    members: list[bytes]
    batches: dict[bytes, list[int]]  # member -> batch ids
    deadline: float  # unix seconds
    model_hash: bytes  # every member must hold this model at the start of the round
    check_commitment: bytes  # sha256 of the secret that draws who checks whom (revealed in Reveal)
    audit_commitment: bytes  # sha256 of the secret that draws audits (revealed in RoundEnd)


@dataclass(frozen=True)
class Commit:
    round: int
    payload_hash: bytes  # sha256 of the payload, served through the blob protocol
    size: int
    model_hash: bytes  # this node's model after the previous round
    loss: float
    state_before: bytes  # sha256 of the optimizer state the payload was computed from (zeros: fresh)
    state_after: bytes  # sha256 of the state after computing it; both served by hash for replay
    utilization: float = 0.0  # share of its wall time spent on its own batches (self-reported, shown only)
    micro_batch: int = 1  # sequences per forward/backward it summed the gradient over (replays use it)


@dataclass(frozen=True)
class Verdict:
    round: int
    target: bytes
    accept: bool
    score: float  # share of the payload the replay reproduced
    available: bool  # False: the target's payload or states could not be fetched
    evidence: bytes  # sha256 of the replayed gradient and loss (zeros when unavailable)
    loss: float  # the target's loss on its batches, as the replay computed it


@dataclass(frozen=True)
class RunInfo:
    config: str  # the run config as TOML (protocol/run_config.py), from the coordinator
    round: int  # the round under way, or the next one
    phase: str
    last_finalized: int  # -1 before the first round ends
    model_hash: bytes  # the model every member holds after `last_finalized` (zeros: not agreed yet)
    step: int  # optimizer steps taken by the run so far
    members: int = 0  # members the coordinator counts now
    needed: int = 0  # members it waits for before the next round can start


@dataclass(frozen=True)
class Reveal:
    round: int
    secret: bytes  # sha256(secret) is the RoundStart's check_commitment
    commits: dict[bytes, bytes]  # member -> payload hash: the commits admitted before the deadline
    validators: dict[bytes, bytes]  # validator -> target, drawn by protocol.checks from the above


@dataclass(frozen=True)
class Recheck:
    round: int
    assignments: dict[bytes, list[bytes]]  # target -> further validators asked to replay it


@dataclass(frozen=True)
class RoundEnd:
    round: int
    accepted: list[bytes]
    rejected: list[bytes]
    penalized: list[bytes]
    audit_secret: bytes  # sha256 of it is the RoundStart's audit_commitment
    # the model the accepted payloads apply to: the round's own in synchronous rounds, the one
    # after the round before in overlapped rounds (a round trains on the model one round behind)
    model_hash: bytes


MESSAGE_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (Join, Heartbeat, RoundStart, Commit, Reveal, Verdict, Recheck, RoundEnd, RunInfo)
}
Message = Join | Heartbeat | RoundStart | Commit | Reveal | Verdict | Recheck | RoundEnd | RunInfo


@dataclass(frozen=True)
class Envelope:
    run: str
    sender: bytes
    seq: int
    body: Message


def _ordered_keys(d: dict) -> list:
    """Sorted keys; hostile maps may mix key types, which Python cannot compare, so the type
    name orders first (for the maps honest senders build, all keys share one type)."""
    return sorted(d, key=lambda k: (type(k).__name__, k))


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _canonical(value[k]) for k in _ordered_keys(value)}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def _signed_bytes(run: str, type_name: str, sender: bytes, seq: int, body: dict) -> bytes:
    return msgpack.packb(_canonical([VERSION, run, type_name, sender, seq, body]), use_bin_type=True)


def seal(identity: Identity, run: str, seq: int, message: Message) -> bytes:
    """Encode and sign a message for the wire."""
    type_name = type(message).__name__
    body = {f.name: getattr(message, f.name) for f in fields(message)}
    _check_body(type(message), body)  # refuse to send what a receiver would reject
    sig = identity.sign(_signed_bytes(run, type_name, identity.public_key, seq, body))
    wire = {
        "v": VERSION,
        "run": run,
        "type": type_name,
        "from": identity.public_key,
        "seq": seq,
        "body": body,
        "sig": sig,
    }
    data = msgpack.packb(_canonical(wire), use_bin_type=True)
    if len(data) > MAX_MESSAGE_BYTES:
        raise ValueError(f"{type_name} message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    return data


def open_message(data: bytes, run: str) -> Envelope:
    """Decode and verify a message from the wire; raises a MessageError subclass."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise OversizedMessage(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        # msgpack's own limits scale with len(data)
        wire = msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_no_ext)
    except Exception as err:  # msgpack raises several unrelated types for bad input
        raise MalformedMessage(f"not a msgpack message: {type(err).__name__}") from None
    _require_plain(wire, MAX_DEPTH)
    if not isinstance(wire, dict) or set(wire) != {"v", "run", "type", "from", "seq", "body", "sig"}:
        raise MalformedMessage("not a message envelope")
    if wire["v"] != VERSION:
        raise UnsupportedVersion(f"message version {wire['v']!r}, this node speaks {VERSION}")
    if wire["run"] != run:
        raise WrongRun(f"message for run {wire['run']!r}, this is {run!r}")
    sender, seq, sig, body, type_name = wire["from"], wire["seq"], wire["sig"], wire["body"], wire["type"]
    if not (
        _is_key(sender)
        and _is_int(seq)
        and seq >= 0
        and isinstance(sig, bytes)
        and len(sig) == 64
        and isinstance(body, dict)
        and isinstance(type_name, str)
    ):
        raise MalformedMessage("envelope fields have the wrong types")
    if not verify(sender, _signed_bytes(run, type_name, sender, seq, body), sig):
        raise BadSignature("signature does not match the sender's key")
    cls = MESSAGE_TYPES.get(type_name)
    if cls is None:
        raise UnknownType(f"unknown message type {type_name!r}")
    _check_body(cls, body)
    return Envelope(run, sender, seq, cls(**body))


MAX_DEPTH = 6  # envelope -> body -> map -> list: honest messages nest 4 deep


def _no_ext(code: int, data: bytes) -> None:
    raise ValueError(f"msgpack extension type {code}")


def _require_plain(value: Any, depth: int) -> None:
    """Only maps, lists, strings, bytes, numbers, booleans and nil, nested at most `depth` deep:
    anything else (msgpack timestamps, deep nesting) is refused before a line of code walks it."""
    if isinstance(value, dict | list):
        if depth == 0:
            raise MalformedMessage(f"nested deeper than {MAX_DEPTH}")
        for item in (*value.keys(), *value.values()) if isinstance(value, dict) else value:
            _require_plain(item, depth - 1)
    elif value is not None and not isinstance(value, str | bytes | int | float):
        raise MalformedMessage(f"a {type(value).__name__} value")


def _check_body(cls: type, body: dict) -> None:
    expected = {f.name: f.type for f in fields(cls)}
    if set(body) != set(expected):
        raise InvalidBody(f"{cls.__name__} needs fields {sorted(expected)}, got {_ordered_keys(body)}")
    for name, annotation in expected.items():
        if not _conforms(body[name], annotation):
            raise InvalidBody(f"{cls.__name__}.{name} is not a valid {annotation}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_key(value: Any) -> bool:
    return isinstance(value, bytes) and len(value) == KEY


def _conforms(value: Any, annotation: Any) -> bool:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list:
        return isinstance(value, list) and all(_conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            _conforms(k, args[0]) and _conforms(v, args[1]) for k, v in value.items()
        )
    if isinstance(annotation, types.UnionType):
        return any(_conforms(value, a) for a in args)
    checks = {
        int: _is_int,
        float: lambda v: (_is_int(v) or isinstance(v, float)) and math.isfinite(v),
        bool: lambda v: isinstance(v, bool),
        str: lambda v: isinstance(v, str),
        bytes: _is_key,
    }
    return checks[annotation](value)


class Inbox:
    """Pure receiving side of gossip: verify, drop duplicates and replays, count rejections.

    Replay protection keeps, per sender, the highest sequence number seen and the numbers seen
    within `window` below it: a number seen before, or older than the window, is a replay.
    The table of senders is bounded (keys are free to make), but `pinned` senders (the run's
    coordinator; the coordinator pins every member it admits) are never evicted, so nobody can
    flood it to make their messages replayable.
    """

    def __init__(
        self, run: str, window: int = 4096, max_senders: int = 10_000, pinned: frozenset[bytes] = frozenset()
    ):
        self.run, self.window, self.max_senders = run, window, max_senders
        self.pinned = set(pinned)
        self.rejected: Counter[str] = Counter()
        self.accepted = 0
        self._seen: dict[bytes, tuple[int, set[int]]] = {}

    def pin(self, key: bytes) -> None:
        self.pinned.add(key)

    def receive(self, data: bytes) -> Envelope | None:
        """The verified message, or None after counting why it was rejected."""
        try:
            envelope = open_message(data, self.run)
            self._check_fresh(envelope.sender, envelope.seq)
        except MessageError as err:
            self.rejected[err.reason] += 1
            return None
        self.accepted += 1
        return envelope

    def _check_fresh(self, sender: bytes, seq: int) -> None:
        top, seen = self._seen.get(sender, (-1, set()))
        if seq in seen or seq <= top - self.window:
            raise ReplayedMessage(f"sequence {seq} already seen or older than {top - self.window}")
        seen.add(seq)
        if seq > top:
            top = seq
            seen = {s for s in seen if s > top - self.window}
        self._seen.pop(sender, None)  # re-insert: the dict's order is least recently heard first
        self._seen[sender] = (top, seen)
        if len(self._seen) > self.max_senders + len(self.pinned):
            del self._seen[next(k for k in self._seen if k not in self.pinned)]
