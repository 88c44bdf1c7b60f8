"""Errors of the p2p layer, split by whose fault they are (as h11 does).

P2PError
├── LocalError                 this process misused the API or its own config is wrong
│   └── IdentityError          a keypair file is unreadable or malformed
└── RemoteError                a peer sent something unusable; feeds peer scoring and bans
    ├── MessageError           a gossip message failed a check (subclasses name which)
    │   ├── OversizedMessage, MalformedMessage, UnsupportedVersion, WrongRun,
    │   ├── BadSignature, UnknownType, InvalidBody
    │   └── ReplayedMessage    a duplicate, or a sequence number from too far back
    └── BlobError              a blob transfer failed (subclasses name which)
        ├── BlobTooLarge, BlobTruncated, BlobHashMismatch, BlobTimeout, BlobUnavailable
"""


class P2PError(Exception):
    pass


class LocalError(P2PError):
    pass


class IdentityError(LocalError):
    pass


class RemoteError(P2PError):
    def __init__(self, message: str, peer: str | None = None):
        super().__init__(message if peer is None else f"{message} (peer {peer})")
        self.peer = peer


class PeerUnreachable(RemoteError):
    pass


class MessageError(RemoteError):
    reason = "invalid"


class OversizedMessage(MessageError):
    reason = "oversized"


class MalformedMessage(MessageError):
    reason = "malformed"


class UnsupportedVersion(MessageError):
    reason = "version"


class WrongRun(MessageError):
    reason = "wrong_run"


class BadSignature(MessageError):
    reason = "bad_signature"


class UnknownType(MessageError):
    reason = "unknown_type"


class InvalidBody(MessageError):
    reason = "invalid_body"


class ReplayedMessage(MessageError):
    reason = "replayed"


class BlobError(RemoteError):
    pass


class BlobTooLarge(BlobError):
    pass


class BlobTruncated(BlobError):
    pass


class BlobHashMismatch(BlobError):
    pass


class BlobTimeout(BlobError):
    pass


class BlobUnavailable(BlobError):
    pass
