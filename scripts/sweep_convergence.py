"""A sweep of bench_convergence.py over optimizer settings: every point with the same seeds and
tokens, each run in its own process (one thread) and kept as JSON under --out, so a stopped
sweep resumes where it stopped. Prints the table of every point, best ratio first, and plots
loss ratio against bytes saved.

    python scripts/sweep_convergence.py                       # the points below, 3 seeds, 300 steps
    python scripts/sweep_convergence.py --steps 1000 --only t128-k18-sign
    python scripts/sweep_convergence.py --table               # only print what is done
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from plotting import save_png, subplots  # noqa: E402  (this script's own directory)

BENCH = Path(__file__).resolve().parent / "bench_convergence.py"
LOCAL = "--precondition none --outer-step values"
PER_CHUNK = "--select chunk --chunk 64 --topk 4"  # the defaults before top-k over whole tensors
POINTS = {
    "t128-k18-sign": "",
    "c64-k4-sign": PER_CHUNK,
    "c64-k6-sign": f"{PER_CHUNK} --topk 6",
    "c64-k8-sign": f"{PER_CHUNK} --topk 8",
    "c32-k1-sign": f"{PER_CHUNK} --chunk 32 --topk 1",
    "c64-k4-sign-lr1.5e-3": f"{PER_CHUNK} --lr 0.0015",
    "c64-k4-sign-beta0.995": f"{PER_CHUNK} --beta 0.995",
    "c64-k4-int8": f"{PER_CHUNK} --values int8",
    "c64-k4-int2": f"{PER_CHUNK} --values int2",
    "c128-k14-int2": f"{PER_CHUNK} --chunk 128 --topk 14 --values int2",
    "h4-k8-int8-outer1": f"{PER_CHUNK} --inner-steps 4 --topk 8 --values int8 --lr 1.0 --beta 0.9 {LOCAL}",
    "h2-k8-sign-outer4e-3": f"{PER_CHUNK} --inner-steps 2 --topk 8 --lr 0.004 --precondition none",
}


def run_point(name: str, flags: str, args: argparse.Namespace) -> dict:
    path = args.out / f"{name}-s{args.steps}.json"
    if path.is_file():
        return json.loads(path.read_text())
    cmd = [sys.executable, str(BENCH), "--threads", "1", "--json", "--plot", "", "--steps", str(args.steps)]
    cmd += ["--eval-every", str(max(25, args.steps // 10)), "--seeds", *map(str, args.seeds), *flags.split()]
    print(f"{name}: {' '.join(flags.split()) or 'the defaults'} ...", flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout)
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return result


def row(name: str, flags: str, result: dict) -> str:
    s = result["summary"]
    seeds = ", ".join(f"{r:.3f}" for r in s["per_seed_ratio"])
    return (
        f"| {name} | `{flags or '(defaults)'}` | {s['final_val_loss_demo']:.3f} | "
        f"{s['final_val_loss_adamw']:.3f} | **{s['loss_ratio']:.3f}** ({seeds}) | "
        f"{s['bytes_ratio']:.0f}x | {s['bits_per_param_per_step']:.4f} |"
    )


def plot(done: dict[str, dict], path: Path, steps: int) -> None:
    fig, ax = subplots(figsize=(7, 4.5))
    for name, result in done.items():
        s = result["summary"]
        ax.scatter(s["bits_per_param_per_step"], s["loss_ratio"])
        ax.annotate(name, (s["bits_per_param_per_step"], s["loss_ratio"]), fontsize=7)
    ax.axhline(1.0, color="gray", linestyle="--", linewidth=0.8)
    ax.axvline(0.005, color="tab:red", linestyle=":", linewidth=0.8, label="goal 2: 0.005 bits/param/step")
    ax.set_xscale("log")
    ax.set_xlabel("bits per parameter per step (log)")
    ax.set_ylabel("held-out loss ratio to AdamW-DDP")
    ax.set_title(f"sweep at {steps} steps (mean of seeds)")
    ax.legend()
    save_png(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", choices=sorted(POINTS), help="these points only")
    parser.add_argument("--out", type=Path, default=Path("out/sweep"))
    parser.add_argument("--plot", type=Path, default=Path("out/sweep.png"))
    parser.add_argument("--table", action="store_true", help="print the points already done; run none")
    args = parser.parse_args()
    names = args.only or list(POINTS)
    done = {}
    for name in names:
        path = args.out / f"{name}-s{args.steps}.json"
        if args.table and not path.is_file():
            continue
        done[name] = run_point(name, POINTS[name], args)
    order = sorted(done, key=lambda n: done[n]["summary"]["loss_ratio"])
    print("| point | flags | DeMo | AdamW-DDP | ratio (per seed) | fewer bytes | bits/param/step |")
    print("|---|---|---|---|---|---|---|")
    for name in order:
        print(row(name, POINTS[name], done[name]))
    if done:
        plot(done, args.plot, args.steps)


if __name__ == "__main__":
    main()
