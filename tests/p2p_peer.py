"""A peer process for the multi-process p2p tests: provides a payload, announces it with a
Commit, fetches every payload announced by others, and reports what it holds as JSON lines.
Runs until stdin closes or --lifetime seconds pass."""

import argparse
import hashlib
import json
import sys
import threading
import time

from p2p.host import Host
from p2p.identity import Identity, peer_id_of
from p2p.messages import Commit


def payload_for(seed: int, size: int) -> bytes:
    block = hashlib.sha256(seed.to_bytes(8, "little")).digest()
    return (block * (size // 32 + 1))[:size]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--bootstrap", nargs="*", default=[])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--lifetime", type=float, default=60)
    args = parser.parse_args()
    host = Host(
        Identity.from_seed(args.seed.to_bytes(32, "little")), "test-run", bootstrap=args.bootstrap
    ).start()
    digest = host.provide(payload_for(args.seed, args.size))
    print(json.dumps({"addrs": host.addrs, "peer": host.peer_id, "digest": digest.hex()}), flush=True)
    threading.Thread(target=lambda: (sys.stdin.read(), host.close(), sys.exit(0)), daemon=True).start()
    fetched, deadline = {}, time.time() + args.lifetime
    while time.time() < deadline:
        host.publish(
            Commit(
                round=0,
                payload_hash=digest,
                size=args.size,
                model_hash=bytes(32),
                loss=0.0,
                state_before=bytes(32),
                state_after=bytes(32),
            )
        )
        while not host.received.empty():
            env = host.received.get()
            key = env.body.payload_hash.hex()
            if isinstance(env.body, Commit) and key not in fetched and env.body.payload_hash != digest:
                try:
                    host.fetch(
                        env.body.payload_hash,
                        env.body.size,
                        [peer_id_of(env.sender), *host.peers()],
                        keep=True,
                    )
                    fetched[key] = True
                except Exception as err:  # reported, then retried on the next Commit
                    print(json.dumps({"error": str(err)}), flush=True)
        print(json.dumps({"fetched": sorted(fetched), "rejected": dict(host.inbox.rejected)}), flush=True)
        time.sleep(0.5)


if __name__ == "__main__":
    main()
