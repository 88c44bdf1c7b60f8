"""One ed25519 keypair per participant, stored as a solana-keygen JSON file (64 numbers: the
32-byte seed, then the 32-byte public key). The same key is the Solana wallet, the libp2p peer
identity (derived in host.py) and the key that signs every protocol message."""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import base58
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from p2p.errors import IdentityError


@dataclass(frozen=True)
class Identity:
    seed: bytes  # 32 bytes
    public_key: bytes  # 32 bytes

    @classmethod
    def from_seed(cls, seed: bytes) -> "Identity":
        if len(seed) != 32:
            raise IdentityError(f"an ed25519 seed is 32 bytes, got {len(seed)}")
        public = (
            Ed25519PrivateKey.from_private_bytes(seed)
            .public_key()
            .public_bytes(Encoding.Raw, PublicFormat.Raw)
        )
        return cls(seed, public)

    @classmethod
    def generate(cls) -> "Identity":
        return cls.from_seed(os.urandom(32))

    @property
    def peer_id(self) -> str:
        return peer_id_of(self.public_key)

    @property
    def address(self) -> str:
        """The base58 Solana address."""
        return base58.b58encode(self.public_key).decode()

    def sign(self, message: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


# A libp2p peer id of an ed25519 key is an identity multihash (0x00, length 36) of the key's
# protobuf encoding (field 1 = Ed25519, field 2 = 32 key bytes): the key is readable from it.
_ED25519_PEER_PREFIX = bytes.fromhex("002408011220")


def peer_id_of(public_key: bytes) -> str:
    """The libp2p peer id (12D3KooW...) of an ed25519 public key: its identity multihash."""
    return base58.b58encode(_ED25519_PEER_PREFIX + public_key).decode()


def key_of_peer_id(peer_id: str) -> bytes:
    """The ed25519 public key inside a peer id (12D3KooW...); ValueError for anything else."""
    try:
        raw = base58.b58decode(peer_id)
    except ValueError:
        raw = b""
    if len(raw) != len(_ED25519_PEER_PREFIX) + 32 or not raw.startswith(_ED25519_PEER_PREFIX):
        raise ValueError(f"{peer_id!r} is not the peer id of an ed25519 key")
    return raw[len(_ED25519_PEER_PREFIX) :]


def load_keypair(path: str | Path) -> Identity:
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise IdentityError(f"{path}: cannot read keypair: {err}") from err
    if not (
        isinstance(raw, list) and len(raw) == 64 and all(isinstance(b, int) and 0 <= b < 256 for b in raw)
    ):
        raise IdentityError(f"{path}: a solana-keygen keypair is a JSON list of 64 bytes")
    identity = Identity.from_seed(bytes(raw[:32]))
    if identity.public_key != bytes(raw[32:]):
        raise IdentityError(f"{path}: the public key does not match the seed")
    return identity


def save_keypair(identity: Identity, path: str | Path) -> None:
    path = Path(path)
    path.write_text(json.dumps(list(identity.seed + identity.public_key)))
    path.chmod(0o600)
