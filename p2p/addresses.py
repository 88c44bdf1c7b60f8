"""The multiaddrs a host announces, and the peer addresses people type.

A host listening on 0.0.0.0 must never announce 0.0.0.0, which no other machine can dial: it
announces what the operator says (`--announce`), or else each of this machine's IPv4 addresses
in its place. A peer address must be a multiaddr ending in /p2p/<peer id>; a plain host:port is
refused with the form it should take.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

import multiaddr

from p2p.identity import key_of_peer_id

UNSPECIFIED = "/ip4/0.0.0.0/"
EXAMPLE = "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooW..."


class AddressError(ValueError):
    """A multiaddr a person typed is malformed or lacks what it needs; the message says the form."""


def with_peer_id(addr: str, peer_id: str) -> str:
    return addr if "/p2p/" in addr else f"{addr.rstrip('/')}/p2p/{peer_id}"


def announced(
    listening: Sequence[str], announce: Sequence[str], interfaces: Sequence[str], peer_id: str
) -> list[str]:
    """What a host tells peers to dial: `announce` if given, else the listening addresses with
    0.0.0.0 replaced by each interface address."""
    if announce:
        return [with_peer_id(a, peer_id) for a in announce]
    out: list[str] = []
    for addr in listening:
        if addr.startswith(UNSPECIFIED):
            out += [addr.replace(UNSPECIFIED, f"/ip4/{ip}/", 1) for ip in interfaces]
        else:
            out.append(addr)
    return [with_peer_id(a, peer_id) for a in dict.fromkeys(out)]


def local_ipv4s() -> list[str]:
    """This machine's IPv4 addresses other than loopback; 127.0.0.1 when it has none."""
    found: list[str] = []
    try:  # the address of the default route's interface; a UDP connect sends nothing
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))
            found.append(s.getsockname()[0])
    except OSError:
        pass
    try:
        found += [info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)]
    except OSError:
        pass
    public = [ip for ip in dict.fromkeys(found) if not ip.startswith("127.") and ip != "0.0.0.0"]
    return public or ["127.0.0.1"]


def bind_error(listen: str) -> str:
    """Why a TCP listen multiaddr cannot be bound here, as the OS says it ('' if it can)."""
    addr = multiaddr.Multiaddr(listen)
    host = addr.value_for_protocol("ip4") if "/ip4/" in listen else "0.0.0.0"
    try:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, int(addr.value_for_protocol("tcp"))))
    except OSError as exc:
        return exc.strerror or str(exc)
    return ""


def parse_listen(text: str) -> str:
    """A listen multiaddr: /ip4/<address>/tcp/<port>."""
    try:
        addr = multiaddr.Multiaddr(text)
        addr.value_for_protocol("tcp")
    except Exception:  # multiaddr raises several unrelated types for bad input
        raise AddressError(f"{text!r} is not a listen multiaddr like /ip4/0.0.0.0/tcp/4001") from None
    return str(addr)


def parse_announce(text: str) -> list[str]:
    """Comma-separated multiaddrs to announce; 0.0.0.0 is refused (nobody can dial it)."""
    addrs = [a.strip() for a in text.split(",") if a.strip()]
    for addr in addrs:
        parse_listen(addr)
        if addr.startswith(UNSPECIFIED):
            raise AddressError(f"cannot announce {addr!r}: 0.0.0.0 is not an address others can dial")
    return addrs


def parse_peer(text: str) -> tuple[str, bytes]:
    """A peer's multiaddr with its /p2p/<peer id>, and the ed25519 key inside that peer id."""
    if "/" not in text:
        raise AddressError(f"{text!r} is not a multiaddr: give the peer's address as {EXAMPLE}")
    _, sep, peer = text.rpartition("/p2p/")
    if not sep:
        raise AddressError(f"{text!r} lacks /p2p/<peer id>: give it as {EXAMPLE} (printed when it starts)")
    try:
        multiaddr.Multiaddr(text)
        return text, key_of_peer_id(peer)
    except Exception:  # multiaddr's parse errors, or a peer id with no ed25519 key
        raise AddressError(f"{text!r} is not a valid peer multiaddr like {EXAMPLE}") from None
