"""Peer-to-peer layer: identity, signed gossip messages, and blob exchange over libp2p."""
