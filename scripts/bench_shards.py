"""A node on N ranks: every rank holding the whole model (node/ranks.py) against the ranks
holding it between them (node/sharded.py), side by side on the same job.

Each mode runs under torchrun (gloo on the CPU here, NCCL on GPUs) and computes the same
gradient job a few times; rank 0 reports, per rank, the model bytes the rank holds for
computing (weights and their gradients: the whole model's on every follower of a replicated
node, a shard's on a sharded one, never counting rank 0's master copy), the memory of every
tensor alive after the jobs (rank 0's master and its gradient included), the peak resident
memory (glibc told to return large freed buffers at once, so that the peak is of what was alive
rather than of the heap glibc keeps), the time per job, and a digest of the gradient, which
must be the same bits in both.

    python scripts/bench_shards.py --preset 20m --ranks 2
"""

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODES = ("replicate", "shard")


def _peak_mb() -> float:
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def _live_mb() -> float:
    """Every tensor storage alive in the process (each counted once)."""
    import gc

    import torch

    storages = {}
    for o in gc.get_objects():
        if isinstance(o, torch.Tensor):
            t = o.to_local() if hasattr(o, "to_local") else o
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(storages.values()) / 1e6


def _held_mb(params) -> float:
    """Weights and gradients this rank holds for computing (a DTensor's local shard only)."""

    def local(t):
        return t.to_local() if hasattr(t, "to_local") else t

    return sum(2 * local(p).numel() * local(p).element_size() for p in params) / 1e6


def _worker(args: argparse.Namespace) -> None:
    import numpy as np
    import torch
    import torch.distributed as dist

    from node import ranks
    from node.data import Corpus, TokenDataset
    from node.model import Llama, preset
    from node.sharded import Shards
    from node.train import Trainer

    group = ranks.from_environment(torch.device("cpu"))
    cfg = preset(args.preset, max_seq_len=args.seq_len)
    shards = Shards(cfg, group) if args.worker == "shard" else None
    model = Llama(cfg) if shards is None or group.rank == 0 else None
    if group.rank > 0:
        if shards is not None:
            shards.follow()
        else:
            ranks.follow(Trainer(model, None, args.micro_batch, group.device, group), group)
        compute = shards.model.parameters() if shards is not None else model.parameters()
        dist.gather_object((_held_mb(compute), _peak_mb(), _live_mb()), None, dst=0)
        ranks.end_rank()
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, 200_000).astype(np.uint32)
    data = TokenDataset(Corpus(tokens, "random", "random"), args.seq_len, args.batch_seqs)
    trainer = Trainer(model, data, args.micro_batch, group.device, group, shards)
    times = []
    for _ in range(args.jobs):
        start = time.perf_counter()
        trainer.accumulate_gradients(list(range(group.world)))
        times.append(time.perf_counter() - start)
    digest = hashlib.sha256(b"".join(p.grad.numpy().tobytes() for p in model.parameters())).hexdigest()
    ranks.stop(group)
    compute = shards.model.parameters() if shards is not None else model.parameters()
    rows = [None] * group.world
    dist.gather_object((_held_mb(compute), _peak_mb(), _live_mb()), rows, dst=0)
    Path(args.out).write_text(json.dumps({
        "mode": args.worker, "job_s": min(times), "grad_sha256": digest,
        "held_mb": [r[0] for r in rows], "peak_mb": [r[1] for r in rows], "live_mb": [r[2] for r in rows],
        "model_mb": 4 * model.num_params() / 1e6,
    }))  # fmt: skip
    ranks.end_rank()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="20m")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-seqs", type=int, default=4)
    ap.add_argument("--micro-batch", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(args)
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in MODES:
            out = Path(tmp) / f"{mode}.json"
            torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            cmd = [*torchrun, f"--nproc-per-node={args.ranks}", __file__, "--worker", mode,
                   "--out", str(out), "--preset", args.preset,
                   "--seq-len", str(args.seq_len), "--batch-seqs", str(args.batch_seqs),
                   "--micro-batch", str(args.micro_batch), "--jobs", str(args.jobs)]  # fmt: skip
            # glibc maps and unmaps every allocation over 64 KB: the peak RSS is then the peak of
            # what was alive, not of the heap glibc keeps after transient buffers are freed
            env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
            env["MALLOC_MMAP_THRESHOLD_"] = "65536"
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                sys.exit(f"{mode}: torchrun failed\n{done.stderr[-2000:]}")
            results.append(json.loads(out.read_text()))
    if args.json:
        print(json.dumps(results))
        return
    replicate, shard = results
    print(f"{args.preset} ({replicate['model_mb']:.0f} MB of fp32 weights) on {args.ranks} ranks")
    for r in results:
        held = ", ".join(f"{m:.0f}" for m in r["held_mb"])
        peak = ", ".join(f"{m:.0f}" for m in r["peak_mb"])
        live = ", ".join(f"{m:.0f}" for m in r["live_mb"])
        print(f"{r['mode']:>9}: job {r['job_s']:.2f} s; per rank: weights + grads held {held} MB, "
              f"live tensors {live} MB, peak RSS {peak} MB")  # fmt: skip
    same = replicate["grad_sha256"] == shard["grad_sha256"]
    print(f"shard / replicate: job time {shard['job_s'] / replicate['job_s']:.2f}, "
          f"follower live tensors {shard['live_mb'][-1] / replicate['live_mb'][-1]:.2f}, "
          f"follower peak RSS {shard['peak_mb'][-1] / replicate['peak_mb'][-1]:.2f}; "
          f"gradients {'identical' if same else 'DIFFER'}")  # fmt: skip


if __name__ == "__main__":
    main()
