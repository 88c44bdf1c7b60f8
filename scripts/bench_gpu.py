"""Training-step throughput: tokens/s, model FLOPs utilisation, and the optimizer's share.

One node's step with the run's optimizer settings (protocol/run_config.py OptimSection), timed in
phases: forward/backward over the micro-batches (bf16 autocast on CUDA),
`compress()`, and `apply()` of --peers payloads; then what a node does besides, every round, on
its host: serving the optimizer state it commits to (written and hashed leaf by leaf,
node/committed_state.py; before the commit can go out) and serving the new weights (after each
apply, for joiners; their hash is the model hash it reports). Tokens/s and the optimizer's share
count the first three phases; the serving share counts all five. MFU counts 6 * params + 12 *
layers * dim * seq FLOPs per token (PaLM's formula, attention included) against the device's dense bf16 peak.

    python scripts/bench_gpu.py                          # 125m and 1b on CUDA; tiny on CPU
    python scripts/bench_gpu.py --presets 125m --seq-len 2048 --micro-batch 8 --json
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node import committed_state  # noqa: E402
from node.checkpoint import write_weights  # noqa: E402
from node.data import Corpus, TokenDataset  # noqa: E402
from node.model import Llama, preset  # noqa: E402
from node.train import Trainer, pick_device  # noqa: E402
from optim import DemoOptimizer  # noqa: E402
from optim.config import SELECTIONS  # noqa: E402
from optim.memory import retain_freed_memory  # noqa: E402
from p2p.blobs import BlobStore  # noqa: E402
from protocol.run_config import OptimSection  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "4090": 165.0}


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override or device.type != "cuda":
        return override
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def synced(device: torch.device, fn, *args):
    """(seconds, result) of fn(*args), with the device's queue drained on both sides."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn(*args)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, out


class Serving:
    """A node's serving of its state and weights, as node/contributions.py and node/runtime.py do
    it: the state before a compress and the one after are both served; one set of weights."""

    def __init__(self, opt: DemoOptimizer, model: torch.nn.Module, directory: Path) -> None:
        self.opt, self.model, self.directory = opt, model, directory
        self.blobs, self.held = BlobStore(), []

    def state(self) -> None:
        self.held.append(committed_state.serve(self.blobs, self.opt, None, self.directory, by_leaf=True))
        if len(self.held) > 2:
            committed_state.forget(self.blobs, self.held.pop(0))

    def weights(self) -> None:
        path = self.directory / "weights.bin"
        self.blobs.add_file(path, write_weights(self.model, path))


def measure(name: str, args: argparse.Namespace, device: torch.device, scratch: Path) -> dict:
    cfg = preset(name, max_seq_len=args.seq_len)
    model = Llama(cfg).to(device)
    tokens = np.random.default_rng(0).integers(
        0, cfg.vocab_size, 4 * args.batch_seqs * (args.seq_len + 1) + 10_000
    )
    data = TokenDataset(
        Corpus(tokens.astype(np.uint32), "random", "random"), args.seq_len, args.batch_seqs, val_fraction=0.01
    )
    trainer = Trainer(model, data, args.micro_batch, device)
    optim = OptimSection(chunk=args.chunk, topk=args.topk, select=args.select)
    opt = DemoOptimizer(model.named_parameters(), optim.demo_config(args.warmup + args.steps, cfg.dim))
    serving = Serving(opt, model, scratch)
    phases: dict[str, list[float]] = {
        "forward_backward": [],
        "compress": [],
        "apply": [],
        "serve_state": [],
        "serve_weights": [],
    }
    for step in range(args.warmup + args.steps):
        fb, _ = synced(device, trainer.accumulate_gradients, [step])
        comp, payload = synced(device, opt.compress)
        state, _ = synced(device, serving.state)
        app, _ = synced(device, opt.apply, {f"peer{i}": payload for i in range(args.peers)})
        weights, _ = synced(device, serving.weights)
        if step >= args.warmup:
            for key, value in zip(phases, (fb, comp, app, state, weights)):
                phases[key].append(value)
    med = {k: statistics.median(v) for k, v in phases.items()}
    step_s = med["forward_backward"] + med["compress"] + med["apply"]
    step_tokens = args.batch_seqs * args.seq_len
    flops_per_token = 6 * model.num_params() + 12 * cfg.n_layers * cfg.dim * args.seq_len
    peak = peak_tflops(device, args.peak_tflops)
    achieved = flops_per_token * step_tokens / step_s / 1e12
    return {
        "preset": name,
        "params": model.num_params(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "seq_len": args.seq_len,
        "tokens_per_step": step_tokens,
        **{f"{k}_s": v for k, v in med.items()},
        "tokens_per_s": step_tokens / step_s,
        "tokens_per_s_compute_only": step_tokens / med["forward_backward"],
        "achieved_tflops": achieved,
        "mfu": achieved / peak if peak else None,
        "optimizer_share": (med["compress"] + med["apply"]) / step_s,
        "serving_share": (med["serve_state"] + med["serve_weights"]) / sum(med.values()),
        "select": args.select,
        "payload_bytes": len(payload),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seq-len", type=int)
    parser.add_argument("--batch-seqs", type=int, default=16, help="sequences per step")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--chunk", type=int, default=OptimSection.chunk)
    parser.add_argument("--topk", type=int, default=OptimSection.topk)
    parser.add_argument("--select", choices=SELECTIONS, default=OptimSection.select)
    parser.add_argument("--peers", type=int, default=4, help="payloads aggregated per apply")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--peak-tflops", type=float, help="device peak for MFU (default: known GPUs)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    args.presets = args.presets or (["125m", "1b"] if cuda else ["tiny"])
    args.seq_len = args.seq_len or (2048 if cuda else 128)
    if not cuda:
        retain_freed_memory()
    with tempfile.TemporaryDirectory(prefix="bench_gpu-") as scratch:
        rows = [measure(name, args, device, Path(scratch)) for name in args.presets]
    if args.json:
        print(json.dumps({"config": vars(args), "rows": rows}, indent=2))
        return
    table = Table(
        title=f"training step on {rows[0]['device']}, seq {args.seq_len}, {args.batch_seqs} seqs/step, "
        f"top-k per {args.select}"
    )
    for col in (
        "preset",
        "params",
        "tokens/s",
        "MFU",
        "fwd+bwd ms",
        "compress ms",
        "apply ms",
        "optimizer share",
        "state ms",
        "weights ms",
        "serving share",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else f"{r['achieved_tflops']:.2f} TFLOP/s"
        table.add_row(
            r["preset"],
            f"{r['params'] / 1e6:.1f}M",
            f"{r['tokens_per_s']:,.0f}",
            mfu,
            f"{r['forward_backward_s'] * 1e3:.0f}",
            f"{r['compress_s'] * 1e3:.0f}",
            f"{r['apply_s'] * 1e3:.0f}",
            f"{r['optimizer_share']:.1%}",
            f"{r['serve_state_s'] * 1e3:.0f}",
            f"{r['serve_weights_s'] * 1e3:.0f}",
            f"{r['serving_share']:.1%}",
        )
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
