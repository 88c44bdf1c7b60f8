"""Convergence: the compressed optimizer over N in-memory replicas against AdamW-DDP.

Same model initialisation, data and token budget, trained two ways side by side:
  (a) DeMo: N replicas, each with its own share of every round's batches and its own momentum,
      exchanging payloads through the real codec (node.replicas.ReplicaRunner);
  (b) AdamW with all-reduced gradients over the same N shards (one model; the mean gradient over
      the round's batches equals the mean of the N equal shards' gradients).
Reports the held-out loss of each over time, the final ratio, and bytes per step per node
(payload vs one dense bf16 gradient). Several seeds average out the run-to-run spread.

    python scripts/bench_convergence.py                      # tiny preset, 300 steps, table + PNG
Defaults are the best of the tuning runs recorded in BENCHMARKS.md (top-k over each whole tensor
of 128x128 DCT blocks, 18 per block's worth of entries, 1-bit signs, beta 0.99, lr 1e-3 at width
128 and lr * 128 / dim for a wider model, held and then decayed to a tenth over the last fifth
of the steps (wsd), Adam-style local preconditioning with beta2 0.99).
    python scripts/bench_convergence.py --json --seeds 0 1 2
    python scripts/bench_convergence.py --preset 20m --steps 2000 --device cuda
    python scripts/bench_convergence.py --preset 125m --seq-len 256 --seconds 300   # what fits
    python scripts/bench_convergence.py --schedule constant --adamw-from out/a.json # DeMo's arm only
    python scripts/bench_convergence.py --preset 20m --steps 1000 --checkpoint out/ckpt  # resumable
(`--adamw-from` takes AdamW-DDP's curves from earlier `--json` results of the same baseline,
corpus and seeds instead of training that arm again.)
"""

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import convergence_checkpoint  # noqa: E402  (this script's own directory)
from plotting import save_png, subplots  # noqa: E402

from node.data import TokenDataset, default_corpus  # noqa: E402
from node.model import Llama, preset  # noqa: E402
from node.replicas import ReplicaRunner  # noqa: E402
from node.tokenizer import ByteTokenizer  # noqa: E402
from node.train import Trainer, pick_device  # noqa: E402
from optim import DemoConfig, LrSchedule, ValueMode  # noqa: E402
from optim.config import SELECTIONS  # noqa: E402
from optim.local import InnerConfig  # noqa: E402
from optim.memory import retain_freed_memory  # noqa: E402
from protocol.assignment import round_batch_ids  # noqa: E402
from protocol.run_config import OptimSection  # noqa: E402

# flags that are the run config's [optim] keys of the same name
OPTIM_FLAGS = (
    "chunk",
    "topk",
    "select",
    "tile",
    "beta",
    "alpha",
    "values",
    "weight_decay",
    "precondition",
    "precondition_beta",
    "outer_step",
    "lr",
    "lr_width",
    "schedule",
    "warmup",
    "decay_fraction",
    "final_ratio",
)


def demo_config(args: argparse.Namespace) -> DemoConfig:
    """The run config's optimizer built from the flags, its schedule over the exchanges."""
    section = OptimSection(**{name: getattr(args, name) for name in OPTIM_FLAGS})
    return section.demo_config(args.steps // args.accumulate, preset(args.preset).dim)


def adamw_lr(args: argparse.Namespace, step: int) -> float:
    return LrSchedule(
        "cosine", lr=args.adam_lr, warmup=args.adam_warmup, total=args.steps, final_ratio=0.1
    ).lr_at(step)


# What AdamW-DDP's arm depends on, to the bit (threads and device change the float sums): a
# stored arm is reused only where all of these match.
BASELINE_KEYS = (
    "threads",
    "device",
    "preset",
    "steps",
    "replicas",
    "seq_len",
    "batch_seqs",
    "micro_batch",
    "eval_every",
    "eval_seqs",
    "adam_lr",
    "adam_warmup",
)


def load_baselines(paths: list[Path], args: argparse.Namespace, corpus_sha256: str) -> dict[int, list[float]]:
    """AdamW-DDP's held-out curve by seed, from earlier --json results of the same baseline
    configuration and corpus; a result that differs in either is refused by name."""
    curves = {}
    for path in paths:
        result = json.loads(path.read_text())
        differ = [k for k in BASELINE_KEYS if result["config"][k] != getattr(args, k)]
        if result["corpus"]["sha256"] != corpus_sha256:
            differ.append("corpus")
        if differ:
            raise SystemExit(f"{path}: its AdamW-DDP arm differs from this run's in {', '.join(differ)}")
        for run in result["runs"]:
            curves[run["seed"]] = [point["adamw"] for point in run["curve"]]
    missing = sorted(set(args.seeds) - set(curves))
    if missing:
        raise SystemExit(f"--adamw-from holds no AdamW-DDP arm for seed(s) {missing}")
    return curves


def run_seed(
    args: argparse.Namespace,
    data: TokenDataset,
    seed: int,
    device: torch.device,
    progress,
    task,
    stored_adamw: list[float] | None = None,
    corpus_sha256: str = "",  # what a checkpoint (--checkpoint) is checked against
) -> dict:
    model = Llama(preset(args.preset, vocab_size=259, max_seq_len=args.seq_len), seed=seed).to(device)
    h = args.inner_steps
    inner = InnerConfig(steps=h, lr=args.inner_lr) if h > 1 else None
    runner = ReplicaRunner(
        model, data, demo_config(args), args.replicas, args.micro_batch, seed, inner, args.accumulate
    )
    baseline = Trainer(model, data, args.micro_batch, device)  # the original model is the AdamW replica
    adamw = torch.optim.AdamW(model.parameters(), lr=args.adam_lr, betas=(0.9, 0.95), weight_decay=0.1)
    arms = {"runner": runner, "baseline": model, "adamw": adamw, "adamw_trained": stored_adamw is None}
    arms |= {"curve": [], "payload_bytes": [], "step": 0}
    saved = args.checkpoint and convergence_checkpoint.path_for(args.checkpoint, seed)
    if saved and saved.exists():
        arms |= convergence_checkpoint.load(saved, args, corpus_sha256, arms)
        if progress:
            progress.console.print(f"seed {seed}: continuing {saved} from step {arms['step']}")
    curve, payload_bytes = arms["curve"], arms["payload_bytes"]
    per = h * args.accumulate  # AdamW-DDP's steps per exchange (1 without local steps or accumulation)
    if progress:
        progress.advance(task, arms["step"])
    for step in range(arms["step"], args.steps):
        if step % per == per - 1:
            inner_lr = args.inner_lr * adamw_lr(args, step - per + 1) / args.adam_lr
            payload_bytes.append(
                runner.step(step // per, args.replicas, inner_lr=inner_lr).payload_bytes / per
            )
        if stored_adamw is None:
            baseline.accumulate_gradients(round_batch_ids(step, args.replicas))
            for group in adamw.param_groups:
                group["lr"] = adamw_lr(args, step)
            adamw.step()
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            demo_loss = runner.trainers[0].evaluate(args.eval_seqs)
            adamw_loss = (
                baseline.evaluate(args.eval_seqs) if stored_adamw is None else stored_adamw[len(curve)]
            )
            curve.append({"step": step + 1, "demo": demo_loss, "adamw": adamw_loss})
        if saved and (step + 1) % args.checkpoint_every == 0 and step + 1 < args.steps:
            convergence_checkpoint.save(saved, args, corpus_sha256, step + 1, arms)
        if progress:
            progress.advance(task)
    return {
        "seed": seed,
        "curve": curve,
        "payload_bytes": statistics.mean(payload_bytes),
        "params": model.num_params(),
    }


def fit_steps(args: argparse.Namespace, data: TokenDataset, device: torch.device) -> int:
    """The most steps, in whole evaluation intervals and at most --steps, whose seeds fit in
    --seconds: two short probe runs give the time per step (their difference) and the fixed cost,
    after a first one that fills the caches (DCT bases, kernels) both would otherwise pay unevenly."""

    def probe(steps: int) -> float:
        start = time.perf_counter()
        probe_args = argparse.Namespace(**vars(args) | {"steps": steps, "checkpoint": None})
        run_seed(probe_args, data, args.seeds[0], device, None, None)
        return time.perf_counter() - start

    probe(1)
    short, long = probe(2), probe(6)
    per_step = max((long - short) / 4, 1e-6)
    fixed = max(short - 2 * per_step, 0.0)
    per_seed = args.seconds / len(args.seeds)
    fitting = int((per_seed - fixed) / per_step) // args.eval_every * args.eval_every
    return max(args.eval_every, min(args.steps, fitting))


def summarize(runs: list[dict]) -> dict:
    demo = [r["curve"][-1]["demo"] for r in runs]
    adamw = [r["curve"][-1]["adamw"] for r in runs]
    dense = 2 * runs[0]["params"]
    payload = statistics.mean(r["payload_bytes"] for r in runs)
    return {
        "final_val_loss_demo": statistics.mean(demo),
        "final_val_loss_adamw": statistics.mean(adamw),
        "loss_ratio": statistics.mean(demo) / statistics.mean(adamw),
        "per_seed_ratio": [d / a for d, a in zip(demo, adamw)],
        "bytes_per_step_demo": payload,
        "bytes_per_step_adamw": dense,
        "bytes_ratio": dense / payload,
        "bits_per_param_per_step": 8 * payload / runs[0]["params"],
    }


def plot(runs: list[dict], summary: dict, path: Path) -> None:
    fig, ax = subplots(figsize=(7, 4.5))
    for i, run in enumerate(runs):
        steps = [p["step"] for p in run["curve"]]
        ax.plot(
            steps,
            [p["adamw"] for p in run["curve"]],
            color="tab:blue",
            alpha=0.8,
            label=f"AdamW-DDP ({summary['bytes_per_step_adamw']:,.0f} B/step)" if i == 0 else None,
        )
        ax.plot(
            steps,
            [p["demo"] for p in run["curve"]],
            color="tab:orange",
            alpha=0.8,
            label=f"DeMo, {len(runs)} seed(s) ({summary['bytes_per_step_demo']:,.0f} B/step)"
            if i == 0
            else None,
        )
    ax.set_xlabel("step")
    ax.set_ylabel("held-out loss (nats/token)")
    ax.set_title(f"loss ratio {summary['loss_ratio']:.3f} at {summary['bytes_ratio']:.0f}x fewer bytes")
    ax.legend()
    save_png(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--preset", default="tiny")
    add("--steps", type=int, default=300)
    add("--replicas", type=int, default=4)
    add("--seq-len", type=int, default=64)
    add(
        "--batch-seqs",
        type=int,
        default=8,
        help="sequences per batch id; each replica trains one batch id per step",
    )
    add("--micro-batch", type=int, default=8)
    add("--eval-every", type=int, default=25)
    add("--eval-seqs", type=int, default=128)
    add("--seeds", type=int, nargs="+", default=[0])
    add(
        "--seconds",
        type=float,
        help="instead of --steps: as many steps as fit (timed first; at most --steps, whole --eval-every)",
    )
    add("--device", default="auto")
    add("--threads", type=int, default=0)
    add("--lr", type=float, default=OptimSection.lr, help="the sign step at width --lr-width")
    add(
        "--lr-width",
        type=int,
        default=OptimSection.lr_width,
        help="a model of width dim steps lr * lr_width / dim (0: lr as given; sign steps only)",
    )
    add("--schedule", default=OptimSection.schedule, choices=["constant", "cosine", "wsd"])
    add("--warmup", type=int, default=0)
    add(
        "--decay-fraction",
        type=float,
        default=OptimSection.decay_fraction,
        help="wsd: the last fraction of the run decays",
    )
    add("--final-ratio", type=float, default=OptimSection.final_ratio, help="cosine, wsd: the last lr / lr")
    add("--chunk", type=int, default=128)
    add("--topk", type=int, default=18)
    add("--select", choices=SELECTIONS, default="tensor", help="top-k within each chunk or over each tensor")
    add(
        "--tile",
        type=int,
        default=OptimSection.tile,
        help="top-k picks tiles of tile x tile coefficients (--topk counts coefficients)",
    )
    add("--beta", type=float, default=0.99)
    add("--alpha", type=float, default=1.0)
    add("--values", default="sign", choices=[m.name.lower() for m in ValueMode])
    add("--weight-decay", type=float, default=0.0)
    add(
        "--precondition",
        default="adam",
        choices=["none", "rms", "adam"],
        help="local scaling before compression",
    )
    add("--precondition-beta", type=float, default=0.99, help="adam preconditioning: second-moment decay")
    add("--inner-steps", type=int, default=1, help="H: local AdamW steps per exchange (optim/local.py)")
    add("--inner-lr", type=float, default=1e-3, help="local steps' peak lr (AdamW's schedule shape)")
    add(
        "--accumulate",
        type=int,
        default=1,
        help="A: one exchange per A steps, its gradient over their batches (bytes per step / A)",
    )
    add(
        "--outer-step",
        default="sign",
        choices=["sign", "values"],
        help="apply the aggregate's sign or values",
    )
    add(
        "--adam-lr",
        type=float,
        default=1e-3,
        help="AdamW-DDP's peak lr (tiny's best over 3 seeds; 20m's is 1.5e-3: BENCHMARKS.md)",
    )
    add("--adam-warmup", type=int, default=20)
    add(
        "--adamw-from",
        type=Path,
        nargs="+",
        default=[],
        help="reuse AdamW-DDP's arm from earlier --json results of the same baseline and seeds",
    )
    add(
        "--checkpoint",
        type=Path,
        help="a directory: each seed's state is saved there every --checkpoint-every steps, and a "
        "run finding one there continues it (copy it elsewhere to branch into another schedule)",
    )
    add("--checkpoint-every", type=int, default=100)
    add("--plot", default="out/convergence.png", help="PNG path; empty for none")
    add("--json", action="store_true")
    args = parser.parse_args()
    if args.inner_steps > 1 and args.accumulate > 1:
        parser.error("--accumulate sums the steps' gradients; --inner-steps steps on each: choose one")
    if args.checkpoint_every < 1:
        parser.error("--checkpoint-every must be at least 1")
    if args.checkpoint and (args.inner_steps > 1 or args.seconds):
        parser.error("--checkpoint keeps no local steps' inner state and needs a fixed --steps")
    if args.threads:
        torch.set_num_threads(args.threads)
    retain_freed_memory()
    console = Console(stderr=args.json, width=120)
    device = pick_device(args.device)
    corpus = default_corpus(ByteTokenizer())
    data = TokenDataset(corpus, args.seq_len, args.batch_seqs)
    if args.seconds:
        args.steps = fit_steps(args, data, device)
        console.print(f"{args.steps} steps fit in {args.seconds:.0f} s")
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("training", total=args.steps * len(args.seeds))
        stored = load_baselines(args.adamw_from, args, corpus.sha256) if args.adamw_from else {}
        runs = [
            run_seed(args, data, s, device, progress, task, stored.get(s), corpus.sha256) for s in args.seeds
        ]
    summary = summarize(runs)
    if args.plot:
        plot(runs, summary, Path(args.plot))
    config = {k: v for k, v in vars(args).items() if k not in ("json", "plot", "adamw_from", "checkpoint")}
    config["adamw_from"] = [str(p) for p in args.adamw_from]
    config["checkpoint"] = args.checkpoint and str(args.checkpoint)
    result = {
        "config": config,
        "corpus": {"sha256": corpus.sha256, "tokens": len(corpus.tokens)},
        "demo_config": asdict(demo_config(args)) | {"values": args.values},
        "summary": summary,
        "runs": runs,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    table = Table(title=f"{args.preset}, {args.replicas} replicas, {args.steps} steps, seeds {args.seeds}")
    for col in ("", "final val loss", "bytes/step/node"):
        table.add_column(col, justify="right")
    table.add_row("DeMo", f"{summary['final_val_loss_demo']:.4f}", f"{summary['bytes_per_step_demo']:,.0f}")
    table.add_row(
        "AdamW-DDP", f"{summary['final_val_loss_adamw']:.4f}", f"{summary['bytes_per_step_adamw']:,.0f}"
    )
    table.add_row("ratio", f"{summary['loss_ratio']:.3f}", f"{summary['bytes_ratio']:.0f}x")
    console.print(table)
    console.print(f"bits per parameter per step: {summary['bits_per_param_per_step']:.4f}")
    tokens = args.steps * args.replicas * args.batch_seqs * args.seq_len
    console.print(f"tokens per run: {tokens:,}; plot: {args.plot or 'none'}")


if __name__ == "__main__":
    main()
