"""Benchmark the compressed optimizer against dense exchange and a reference-style DeMo step.

For each model shape list and each k it reports, side by side in one run:
  - bytes per step per node, against one dense bf16 and fp32 gradient and the reference format
    (int64 index + fp32 value per coefficient);
  - index bits per coefficient against the entropy bound log2 C(n, k) per chunk;
  - compress and apply time (apply aggregates --peers payloads) of this implementation against a
    reference-style one (weight-domain momentum, einsum DCT, local decode for error feedback),
    and the share of the wire codec in this implementation's time.

    python scripts/bench_optim.py                    # table; PNG in out/bench_optim.png
    python scripts/bench_optim.py --json             # JSON only
    python scripts/bench_optim.py --models matrix-4096 --ks 8 32 --grad gaussian
"""

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plotting import save_png, subplots  # noqa: E402  (this script's own directory)

from optim import DemoConfig, DemoOptimizer, LrSchedule, ValueMode, decode, encode, rice  # noqa: E402
from optim.demo import take_topk, update_momentum  # noqa: E402
from optim.memory import retain_freed_memory  # noqa: E402


def llama_shapes(
    vocab: int, dim: int, layers: int, ffn: int, kv_dim: int
) -> list[tuple[str, tuple[int, ...]]]:
    """Parameter names and shapes of a Hugging Face LlamaForCausalLM with untied embeddings."""
    shapes = [("model.embed_tokens.weight", (vocab, dim))]
    for i in range(layers):
        at = f"model.layers.{i}"
        shapes += [
            (f"{at}.self_attn.q_proj.weight", (dim, dim)),
            (f"{at}.self_attn.k_proj.weight", (kv_dim, dim)),
            (f"{at}.self_attn.v_proj.weight", (kv_dim, dim)),
            (f"{at}.self_attn.o_proj.weight", (dim, dim)),
            (f"{at}.mlp.gate_proj.weight", (ffn, dim)),
            (f"{at}.mlp.up_proj.weight", (ffn, dim)),
            (f"{at}.mlp.down_proj.weight", (dim, ffn)),
            (f"{at}.input_layernorm.weight", (dim,)),
            (f"{at}.post_attention_layernorm.weight", (dim,)),
        ]
    return shapes + [("model.norm.weight", (dim,)), ("lm_head.weight", (vocab, dim))]


MODELS: dict[str, Callable[[], list[tuple[str, tuple[int, ...]]]]] = {
    "matrix-4096": lambda: [("w", (4096, 4096))],
    "llama-125m": lambda: llama_shapes(vocab=32000, dim=768, layers=12, ffn=2048, kv_dim=768),
    "llama-tiny": lambda: llama_shapes(vocab=259, dim=128, layers=4, ffn=352, kv_dim=64),
}


def make_grads(shapes, kind: str, seed: int) -> dict[str, torch.Tensor]:
    """Gaussian noise, or the structure of a real linear-layer gradient: a batch's sum of rank-1
    outer products (rank 16) plus noise, which puts top-k positions at low frequencies less
    uniformly than noise does."""
    gen = torch.Generator().manual_seed(seed)
    grads = {}
    for name, shape in shapes:
        g = torch.randn(shape, generator=gen)
        if kind == "lowrank" and len(shape) == 2:
            left = torch.randn(shape[0], 16, generator=gen)
            right = torch.randn(16, shape[1], generator=gen).cumsum(dim=1) / math.sqrt(shape[1])
            g = 0.1 * g + left @ right / 4
        grads[name] = g
    return grads


class ReferenceDeMo:
    """A reference-style DeMo step, as bloc97/DeMo runs it: momentum in the weight domain,
    three-operand einsum DCT, a local decode for error feedback, int64 indices + fp32 values,
    and scatter_reduce mean aggregation."""

    def __init__(self, shapes, chunk: int, k: int, beta: float) -> None:
        self.k, self.beta = k, beta
        self.deltas = {name: torch.zeros(shape) for name, shape in shapes}
        self.bases: dict[int, torch.Tensor] = {}
        self.chunks = {name: [self._divisor(d, chunk) for d in shape] for name, shape in shapes}

    @staticmethod
    def _divisor(n: int, chunk: int) -> int:
        return max(d for d in range(1, chunk + 1) if n % d == 0)

    def _basis(self, n: int) -> torch.Tensor:
        if n not in self.bases:
            k = torch.arange(n, dtype=torch.float64)[:, None]
            f = torch.cos(math.pi * (2 * torch.arange(n)[None, :] + 1) * k / (2 * n)) * math.sqrt(2 / n)
            f[0] /= math.sqrt(2)
            self.bases[n] = f.T.float().contiguous()  # columns are basis vectors, as the reference
        return self.bases[n]

    def _encode(self, name: str, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 1:
            c = self.chunks[name][0]
            return torch.einsum("...j,jb->...b", x.reshape(-1, c), self._basis(c))
        ch, cw = self.chunks[name]
        blocks = x.reshape(x.shape[0] // ch, ch, x.shape[1] // cw, cw).permute(0, 2, 1, 3)
        return torch.einsum("...ij,ib,jd->...bd", blocks, self._basis(ch), self._basis(cw))

    def _decode(self, name: str, c: torch.Tensor, shape) -> torch.Tensor:
        if len(shape) == 1:
            cw = self.chunks[name][0]
            return torch.einsum("...b,jb->...j", c, self._basis(cw)).reshape(shape)
        ch, cw = self.chunks[name]
        x = torch.einsum("...bd,ib,jd->...ij", c, self._basis(ch), self._basis(cw))
        return x.permute(0, 2, 1, 3).reshape(shape)

    def compress(self, grads, lr: float) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Size]]:
        out = {}
        for name, delta in self.deltas.items():
            delta.mul_(self.beta).add_(grads[name], alpha=lr)
            coeffs = self._encode(name, delta)
            flat = coeffs.flatten(start_dim=-2) if delta.ndim == 2 else coeffs
            idx = flat.abs().topk(min(self.k, flat.shape[-1]), dim=-1, sorted=False).indices
            val = flat.gather(-1, idx)
            sent = torch.zeros_like(flat).scatter(-1, idx, val).reshape(coeffs.shape)
            delta.sub_(self._decode(name, sent, delta.shape))
            out[name] = (idx, val, coeffs.shape)
        return out

    def apply(self, params, payloads: list, lr: float, wd: float) -> None:
        for name, p in params.items():
            shape = payloads[0][name][2]
            flat_shape = (*shape[:-2], shape[-2] * shape[-1]) if p.ndim == 2 else shape
            idx = torch.cat([pl[name][0] for pl in payloads], dim=-1)
            val = torch.cat([pl[name][1] for pl in payloads], dim=-1)
            mean = torch.zeros(flat_shape).scatter_reduce(-1, idx, val, "mean", include_self=False)
            p.mul_(1 - lr * wd).sub_(self._decode(name, mean.reshape(shape), p.shape).sign(), alpha=lr)


def entropy_bits(n: int, k: int) -> float:
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)


def index_bits(opt: DemoOptimizer, payload: bytes) -> tuple[float, float]:
    """(measured, entropy-bound) index bits per sent coefficient of one payload."""
    decoded = decode(opt.spec, payload)
    measured = bound = count = 0.0
    for ts, tp in zip(opt.spec.tensors, decoded.tensors):
        gaps = rice.gaps_from_indices(tp.indices)
        b = rice.best_rice_param(gaps, ts.rice_max)
        measured += (gaps >> b).sum() + gaps.size * (b + 1)
        bound += len(tp.groups) * entropy_bits(ts.layout.chunk_numel, ts.k)
        count += tp.indices.size
    return measured / count, bound / count


def timed_pair(first: Callable[[], object], second: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median seconds of each, run alternately so load on the machine falls on both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for fn, out in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(shapes, grads, k: int, peers: int, repeat: int) -> tuple[dict, dict]:
    """This implementation and the reference on the same gradients: sizes, bits, and times."""
    params = {name: torch.nn.Parameter(torch.zeros(shape)) for name, shape in shapes}
    opt = DemoOptimizer(
        params.items(), DemoConfig(topk=k, values=ValueMode.SIGN, schedule=LrSchedule(lr=1e-3))
    )
    ref = ReferenceDeMo(shapes, chunk=64, k=k, beta=0.999)
    ref_params = {name: torch.zeros(shape) for name, shape in shapes}
    for name, p in params.items():
        p.grad = grads[name]
    for _ in range(3):  # a few steps of momentum, as in training
        payload, ref_payload = opt.compress(), ref.compress(grads, 1e-3)
    ours = {"payload_bytes": len(payload)}
    ours["index_bits"], ours["bound_bits"] = index_bits(opt, payload)
    reference = {"payload_bytes": sum(idx.numel() * 12 for idx, _, _ in ref_payload.values())}
    ours["compress_s"], reference["compress_s"] = timed_pair(
        opt.compress, lambda: ref.compress(grads, 1e-3), repeat
    )
    payload = opt.compress()
    batch = {f"n{i}": payload for i in range(peers)}

    def apply_once():
        opt.apply(batch)
        opt.step -= 1  # stay on the payload's step

    ours["apply_s"], reference["apply_s"] = timed_pair(
        apply_once, lambda: ref.apply(ref_params, [ref_payload] * peers, 1e-3, 0.0), repeat
    )
    ours.update(phase_times(opt, payload, peers))
    return ours, reference


def phase_times(opt: DemoOptimizer, payload: bytes, peers: int) -> dict:
    """Time of the forward transform and of the wire codec, to show the codec's share."""
    lr = opt.lr
    layouts = [ts.layout for ts in opt.spec.tensors]
    dct_s = timed(
        lambda: [
            update_momentum(m, p.grad, lay, 0.999, lr) for p, lay, m in zip(opt.params, layouts, opt.momentum)
        ]
    )
    tensors = [take_topk(m, ts, 1.0) for ts, m in zip(opt.spec.tensors, opt.momentum)]
    return {
        "dct_s": dct_s,
        "encode_s": timed(lambda: encode(opt.spec, opt.step, tensors)),
        "decode_s": timed(lambda: decode(opt.spec, payload)),
    }


def run(args: argparse.Namespace, console: Console) -> list[dict]:
    rows = []
    jobs = [(m, k) for m in args.models for k in args.ks]
    with Progress(console=console, transient=True, disable=args.json) as progress:
        task = progress.add_task("benchmark", total=len(jobs))
        for model, k in jobs:
            progress.update(task, description=f"{model} k={k}")
            shapes = MODELS[model]()
            grads = make_grads(shapes, args.grad, seed=0)
            numel = sum(math.prod(s) for _, s in shapes)
            ours, ref = measure(shapes, grads, k, args.peers, args.repeat)
            rows.append(
                {
                    "model": model,
                    "params": numel,
                    "k": k,
                    "grad": args.grad,
                    "peers": args.peers,
                    "bytes": ours["payload_bytes"],
                    "x_vs_dense_bf16": 2 * numel / ours["payload_bytes"],
                    "x_vs_dense_fp32": 4 * numel / ours["payload_bytes"],
                    "x_vs_reference_format": ref["payload_bytes"] / ours["payload_bytes"],
                    "index_bits": ours["index_bits"],
                    "bound_bits": ours["bound_bits"],
                    "index_vs_bound": ours["index_bits"] / ours["bound_bits"],
                    "ours": ours,
                    "reference": ref,
                    "compress_speedup": ref["compress_s"] / ours["compress_s"],
                    "apply_speedup": ref["apply_s"] / ours["apply_s"],
                    "step_speedup": (ref["compress_s"] + ref["apply_s"])
                    / (ours["compress_s"] + ours["apply_s"]),
                    "codec_share_of_dct": (ours["encode_s"] + ours["decode_s"]) / ours["dct_s"],
                }
            )
            progress.advance(task)
    return rows


def print_table(rows: list[dict], console: Console) -> None:
    table = Table(title="compressed optimizer: one node, one step (SIGN values)")
    for col in (
        "model",
        "k",
        "bytes/step",
        "x bf16",
        "x ref fmt",
        "idx bits",
        "bound",
        "ratio",
        "compress ms (ref)",
        "apply ms (ref)",
        "step x",
        "codec/DCT",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        o, f = r["ours"], r["reference"]
        table.add_row(
            r["model"],
            str(r["k"]),
            f"{r['bytes']:,}",
            f"{r['x_vs_dense_bf16']:.0f}",
            f"{r['x_vs_reference_format']:.1f}",
            f"{r['index_bits']:.2f}",
            f"{r['bound_bits']:.2f}",
            f"{r['index_vs_bound']:.3f}",
            f"{o['compress_s'] * 1e3:.0f} ({f['compress_s'] * 1e3:.0f})",
            f"{o['apply_s'] * 1e3:.0f} ({f['apply_s'] * 1e3:.0f})",
            f"{r['step_speedup']:.2f}",
            f"{r['codec_share_of_dct']:.2f}",
        )
    console.print(table)


def plot(rows: list[dict], path: Path) -> None:
    models = sorted({r["model"] for r in rows})
    fig, axes = subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [r for r in rows if r["model"] == model]
        ks = [str(r["k"]) for r in mine]
        dense = 2 * mine[0]["params"]
        ax.bar(ks, [r["bytes"] for r in mine], label="eranos payload")
        ax.bar(
            ks, [r["bytes"] * r["x_vs_reference_format"] for r in mine], alpha=0.3, label="reference format"
        )
        ax.axhline(dense, color="k", linestyle="--", label="dense bf16 gradient")
        ax.set_yscale("log")
        ax.set_xlabel("k per 64x64 chunk")
        ax.set_ylabel("bytes per step per node")
        ax.set_title(model)
        ax.set_ylim(top=dense * 4)
        ax.legend(loc="center right")
    save_png(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["matrix-4096", "llama-125m"], choices=sorted(MODELS))
    parser.add_argument("--ks", nargs="+", type=int, default=[4, 8, 16, 32])
    parser.add_argument("--grad", choices=["lowrank", "gaussian"], default="lowrank")
    parser.add_argument("--peers", type=int, default=4, help="payloads aggregated per apply")
    parser.add_argument("--repeat", type=int, default=3, help="timing repeats (median)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--no-retain-memory",
        action="store_true",
        help="leave glibc's default of unmapping freed large blocks",
    )
    parser.add_argument("--plot", default="out/bench_optim.png", help="PNG path; empty for none")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    retained = not args.no_retain_memory and retain_freed_memory()
    console = Console(stderr=args.json, width=160)
    rows = run(args, console)
    if args.plot:
        plot(rows, Path(args.plot))
    if args.json:
        print(
            json.dumps(
                {"threads": torch.get_num_threads(), "retain_freed_memory": retained, "rows": rows}, indent=2
            )
        )
    else:
        print_table(rows, console)
        console.print(
            f"plot: {args.plot}  threads: {torch.get_num_threads()}  retain freed memory: {retained}"
        )


if __name__ == "__main__":
    main()
