"""All-to-all payload exchange: the blob protocol (its key-authenticated TCP side channel, and
the libp2p stream it falls back to) against a raw TCP full mesh.

N processes each hold a payload of S MB and fetch every other one, concurrently. The time is
from the start signal until the last process holds all N - 1 payloads (hash-checked in both
cases). The same bytes then move over plain TCP sockets between N fresh processes in the same
run; the ratio of the two times is the figure (goal <= 2).

    python scripts/bench_p2p.py                       # N in {4, 8}, S in {1, 10} MB
    python scripts/bench_p2p.py --nodes 4 --sizes 1 --json
    python scripts/bench_p2p.py --joiner --sizes 500  # one process fetches one 500 MB blob (a model)
"""

import argparse
import hashlib
import json
import socket
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def payload(index: int, size: int) -> bytes:
    block = hashlib.sha256(index.to_bytes(8, "little")).digest() * 2048  # 64 KB
    return (block * (size // len(block) + 1))[:size]


def read_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(1 << 20, n - len(buf)))
        if not chunk:
            raise ConnectionError("peer closed early")
        buf += chunk
    return bytes(buf)


def tcp_peer(index: int, size: int) -> None:
    """Serve our payload to every connection; after 'go', fetch all others concurrently."""
    data = payload(index, size)
    server = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            conn, _ = server.accept()
            threading.Thread(
                target=lambda c=conn: (c.sendall(struct.pack("<Q", len(data)) + data), c.close()), daemon=True
            ).start()

    threading.Thread(target=serve, daemon=True).start()
    print(json.dumps({"port": server.getsockname()[1]}), flush=True)
    others = json.loads(sys.stdin.readline())

    def fetch(peer):
        with socket.create_connection(("127.0.0.1", peer["port"])) as sock:
            (length,) = struct.unpack("<Q", read_exactly(sock, 8))
            body = read_exactly(sock, length)
        assert hashlib.sha256(body).hexdigest() == peer["digest"]

    with ThreadPoolExecutor(max(1, len(others))) as pool:
        list(pool.map(fetch, others))
    print(json.dumps({"done": time.time()}), flush=True)
    sys.stdin.read()


def blob_peer(index: int, size: int, side_channel: bool) -> None:
    from p2p.host import Host
    from p2p.identity import Identity

    host = Host(Identity.from_seed(index.to_bytes(32, "little")), "bench", side_channel=side_channel).start()
    host.provide(payload(index, size))
    print(json.dumps({"addr": host.addrs[0], "peer": host.peer_id}), flush=True)
    others = json.loads(sys.stdin.readline())
    for peer in others:
        host.connect(peer["addr"])
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
    try:
        with ThreadPoolExecutor(max(1, len(others))) as pool:
            list(pool.map(lambda p: host.fetch(bytes.fromhex(p["digest"]), size, [p["peer"]]), others))
        print(json.dumps({"done": time.time()}), flush=True)
    except Exception as err:  # reported to the parent, which fails the measurement
        print(json.dumps({"error": f"{type(err).__name__}: {err}"}), flush=True)
    sys.stdin.read()
    host.close()


def spawn(mode: str, index: int, size: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, "--peer", mode, str(index), str(size)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def exchange(mode: str, nodes: int, size: int, joiner: bool = False, timeout: float = 300.0) -> float:
    """Seconds until every process holds what it fetches: all the others' payloads, or (joiner)
    only the last process fetches the first one's."""
    procs = [spawn(mode, i, size) for i in range(nodes)]
    try:
        hellos = [json.loads(p.stdout.readline()) for p in procs]
        digests = [hashlib.sha256(payload(i, size)).hexdigest() for i in range(nodes)]
        peers = [h | {"digest": d} for h, d in zip(hellos, digests)]
        for i, proc in enumerate(procs):
            wanted = ([peers[0]] if i == nodes - 1 else []) if joiner else peers[:i] + peers[i + 1 :]
            proc.stdin.write(json.dumps(wanted) + "\n")
            proc.stdin.flush()
        if mode != "tcp":  # connections are set up before the clock starts, as TCP's listen is
            for proc in procs:
                json.loads(proc.stdout.readline())
            start = time.time()
            for proc in procs:
                proc.stdin.write("go\n")
                proc.stdin.flush()
        else:
            start = time.time()
        timer = threading.Timer(timeout, lambda: [p.kill() for p in procs])  # bounds every read below
        timer.start()
        try:
            reports = [
                json.loads(proc.stdout.readline() or '{"error": "peer exited or timed out"}')
                for proc in procs
            ]
        finally:
            timer.cancel()
        errors = [r["error"] for r in reports if "error" in r]
        if errors:
            raise RuntimeError(f"{mode} exchange failed: {errors[:2]}")
        return max(r["done"] for r in reports) - start
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--peer":
        mode, index, size = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        if mode == "tcp":
            tcp_peer(index, size)
        else:
            blob_peer(index, size, side_channel=mode == "blob")
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 10], help="MB per payload")
    parser.add_argument("--joiner", action="store_true", help="one process fetches one payload (a model)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    for nodes in args.nodes:
        for mb in args.sizes:
            size = int(mb * 1_000_000)
            moved = size if args.joiner else nodes * (nodes - 1) * size
            row = {"nodes": nodes, "mb": mb, "bytes_moved": moved, "joiner": args.joiner}
            try:
                row["blob_s"], row["libp2p_s"] = (
                    exchange("blob", nodes, size, args.joiner),
                    exchange("libp2p", nodes, size, args.joiner),
                )
                row["tcp_s"] = exchange("tcp", nodes, size, args.joiner)
                row["blob_mb_s"], row["tcp_mb_s"] = moved / 1e6 / row["blob_s"], moved / 1e6 / row["tcp_s"]
                row["ratio"], row["libp2p_ratio"] = (
                    row["blob_s"] / row["tcp_s"],
                    row["libp2p_s"] / row["tcp_s"],
                )
            except RuntimeError as err:  # recorded, not hidden: the row shows what failed
                row["error"] = str(err)
            rows.append(row)
    if args.json:
        print(json.dumps({"rows": rows}, indent=2))
        return
    title = "one joiner fetches one payload" if args.joiner else "all-to-all payload exchange"
    table = Table(title=f"{title} on 127.0.0.1")
    columns = ("nodes", "MB each", "blobs s", "libp2p stream s", "raw TCP s", "blobs / TCP", "libp2p / TCP")
    columns += ("blobs MB/s", "TCP MB/s")
    for col in columns:
        table.add_column(col, justify="right")
    for r in rows:
        if "error" in r:
            table.add_row(str(r["nodes"]), f"{r['mb']:g}", r["error"][:60], *[""] * 6)
            continue
        table.add_row(
            str(r["nodes"]), f"{r['mb']:g}", f"{r['blob_s']:.2f}", f"{r['libp2p_s']:.2f}",
            f"{r['tcp_s']:.3f}", f"{r['ratio']:.1f}", f"{r['libp2p_ratio']:.1f}",
            f"{r['blob_mb_s']:.0f}", f"{r['tcp_mb_s']:.0f}",
        )  # fmt: skip
    Console().print(table)


if __name__ == "__main__":
    main()
