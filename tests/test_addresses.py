"""What a host announces (never 0.0.0.0) and the peer addresses people type."""

import pytest

from p2p.addresses import AddressError, announced, parse_announce, parse_peer
from p2p.identity import Identity

ME = Identity.from_seed(bytes(32)).peer_id


def test_a_wildcard_listener_announces_each_interface_address():
    assert announced(["/ip4/0.0.0.0/tcp/4002"], [], ["10.0.0.5", "192.168.1.9"], ME) == [
        f"/ip4/10.0.0.5/tcp/4002/p2p/{ME}",
        f"/ip4/192.168.1.9/tcp/4002/p2p/{ME}",
    ]


def test_announce_replaces_the_derived_addresses_and_gains_the_peer_id():
    assert announced(["/ip4/0.0.0.0/tcp/4002"], ["/ip4/203.0.113.7/tcp/9000"], ["10.0.0.5"], ME) == [
        f"/ip4/203.0.113.7/tcp/9000/p2p/{ME}"
    ]


def test_a_specific_listen_address_is_announced_as_it_is():
    assert announced([f"/ip4/127.0.0.1/tcp/5/p2p/{ME}"], [], ["10.0.0.5"], ME) == [
        f"/ip4/127.0.0.1/tcp/5/p2p/{ME}"
    ]


def test_announcing_the_wildcard_is_refused():
    with pytest.raises(AddressError, match="0.0.0.0 is not an address others can dial"):
        parse_announce("/ip4/0.0.0.0/tcp/4002")


def test_announce_takes_a_comma_separated_list():
    assert parse_announce("/ip4/1.2.3.4/tcp/1, /dns4/node.example/tcp/2") == [
        "/ip4/1.2.3.4/tcp/1",
        "/dns4/node.example/tcp/2",
    ]


def test_a_peer_address_gives_back_the_key_in_its_peer_id():
    identity = Identity.from_seed(bytes([7]) * 32)
    addr = f"/ip4/10.0.0.5/tcp/4001/p2p/{identity.peer_id}"
    assert parse_peer(addr) == (addr, identity.public_key)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("10.0.0.5:4001", "is not a multiaddr"),
        ("/ip4/10.0.0.5/tcp/4001", "lacks /p2p/<peer id>"),
        ("/ip4/10.0.0.5/tcp/4001/p2p/QmNotAnEd25519Key", "not a valid peer multiaddr"),
        ("/ip9/x/p2p/" + ME, "not a valid peer multiaddr"),
    ],
)
def test_a_malformed_peer_address_is_refused_with_the_form_it_should_take(text, says):
    with pytest.raises(AddressError, match=says) as exc:
        parse_peer(text)
    assert "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooW..." in str(exc.value)
