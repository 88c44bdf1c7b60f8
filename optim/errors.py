"""Typed errors for payloads that arrive from other nodes.

Everything a remote peer can get wrong about a payload raises a subclass of `PayloadError`;
decoding never raises anything else, so callers catch one type, count it, and report the peer.

    PayloadError                 the payload is unusable; the sender is at fault
    ├── OversizedPayloadError    longer than the size limit (checked before parsing)
    ├── TruncatedPayloadError    ends before a section it declares
    ├── TrailingBytesError       bytes left after the last section
    ├── HeaderError              wrong magic or unsupported version
    ├── SpecMismatchError        built for another parameter spec (names, shapes, k, mode)
    ├── StalePayloadError        built for another optimizer step
    ├── MalformedSectionError    a section's structure is invalid (Rice parameter, padding bits, bit counts)
    ├── IndexRangeError          a coefficient index lies outside its chunk
    └── ValueRangeError          a value is non-finite or outside its quantized range

Duplicate or unsorted indices cannot be expressed: indices travel as gaps between sorted
positions, so every payload that decodes has strictly increasing indices in each chunk.
"""


class PayloadError(ValueError):
    """A payload from a peer is invalid; the message says what and where."""


class OversizedPayloadError(PayloadError):
    pass


class TruncatedPayloadError(PayloadError):
    pass


class TrailingBytesError(PayloadError):
    pass


class HeaderError(PayloadError):
    pass


class SpecMismatchError(PayloadError):
    pass


class StalePayloadError(PayloadError):
    pass


class MalformedSectionError(PayloadError):
    pass


class IndexRangeError(PayloadError):
    pass


class ValueRangeError(PayloadError):
    pass
