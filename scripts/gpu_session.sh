#!/usr/bin/env bash
# What a lent GPU box checks and measures in one call (BENCHMARKS.md, "Training-step throughput"
# and "125m on an H200"): the CUDA tests, the 125m comparisons against AdamW-DDP for as many steps
# as the budget leaves (the defaults, and top-5 against the same AdamW-DDP arm), and one node's
# training step (throughput, MFU, the optimizer's share) under both top-k selections.
#   OUT=dir PYTHON=.venv/bin/python scripts/gpu_session.sh [total seconds, default 480]
# Logs, JSON and the loss-curve PNG land in $OUT (default out/gpu); a summary is printed last.
set -u
out=${OUT:-out/gpu}
budget=${1:-480}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD

run() {  # run NAME SECONDS COMMAND...: stdout to $out/NAME, stderr to $out/stderr.log
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    echo "== $name" >>"$out/stderr.log"
    timeout "$limit" "$@" >"$out/$name" 2>>"$out/stderr.log"
    echo "$name: exit $? after $((SECONDS - start)) s"
}

if ! "$py" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    echo "gpu_session.sh: $py sees no CUDA device here; run it on a GPU box" >&2
    exit 2
fi

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$py" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__)'
} | tee "$out/gpu.txt"
run tests.log 150 "$py" -m pytest -q -p no:cacheprovider -rs tests/test_demo.py tests/test_train.py
tail -4 "$out/tests.log"
# the step benchmarks below take about 60 s on an H200; the comparisons get the rest: the
# defaults (goal 1) with AdamW-DDP's arm, then goal 2's budget (top-5, 0.0045 bits/param/step at
# 20m) on DeMo's arm alone, reusing that AdamW-DDP arm at the same number of steps
seconds=$((budget - SECONDS - 150))
run convergence_125m.json $((seconds * 55 / 100 + 90)) "$py" scripts/bench_convergence.py --preset 125m \
    --seq-len 256 --device cuda --steps 1000 --seconds $((seconds * 55 / 100)) --json \
    --plot "$out/convergence_125m.png"
steps=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["config"]["steps"])' \
    "$out/convergence_125m.json" 2>/dev/null)
[ -n "$steps" ] && run convergence_125m_top5.json $((budget - SECONDS - 150)) "$py" \
    scripts/bench_convergence.py --preset 125m --seq-len 256 --device cuda --steps "$steps" --topk 5 \
    --adamw-from "$out/convergence_125m.json" --json --plot "$out/convergence_125m_top5.png"
run bench_gpu.json 120 "$py" scripts/bench_gpu.py --presets 125m 1b --json
run bench_gpu_chunk.json 60 "$py" scripts/bench_gpu.py --presets 125m --select chunk --chunk 64 --topk 4 --json
"$py" - "$out" <<'PY'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
for name in ("bench_gpu.json", "bench_gpu_chunk.json"):
    try:
        for r in json.loads((out / name).read_text())["rows"]:
            print(f"{r['preset']} {r['select']}: {r['tokens_per_s']:,.0f} tok/s, MFU {r['mfu'] or 0:.1%}, "
                  f"fwd+bwd {r['forward_backward_s'] * 1e3:.0f} ms, compress {r['compress_s'] * 1e3:.0f} ms, "
                  f"apply {r['apply_s'] * 1e3:.0f} ms, optimizer {r['optimizer_share']:.1%}, "
                  f"{r['payload_bytes']:,} B")
    except (OSError, ValueError, KeyError) as e:
        print(name, "unreadable:", e)
for name in ("convergence_125m.json", "convergence_125m_top5.json"):
    try:
        result = json.loads((out / name).read_text())
        s = result["summary"]
        print(f"{name}, {result['config']['steps']} steps: DeMo {s['final_val_loss_demo']:.4f}, "
              f"AdamW {s['final_val_loss_adamw']:.4f}, ratio {s['loss_ratio']:.3f} at "
              f"{s['bytes_ratio']:.0f}x, {s['bits_per_param_per_step']:.4f} bits")
        print([(p["step"], round(p["demo"], 3), round(p["adamw"], 3)) for p in result["runs"][0]["curve"]])
    except (OSError, ValueError, KeyError) as e:
        print(name, "unreadable:", e)
PY
