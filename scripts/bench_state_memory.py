"""Memory of a whole-state check: the optimizer state handled as bytes against through files.

A run with local steps commits to its whole optimizer state (momentum and the inner AdamW
state: 12 bytes a parameter). A member serves it, and a validator fetches it, loads it before
the replay and compares the claimed next state with the replay's. Each arm does those steps for
one model in a fresh child process and reports the peak resident memory they add to the
process (Linux's VmHWM, reset after the model and optimizers are built):

    bytes:  the state as one bytes object, served, fetched (a second copy) and loaded
    files:  written to a file one tensor at a time, loaded and compared from it (the runtime's way)

    python scripts/bench_state_memory.py --preset 125m
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ARMS = ("bytes", "files")


def _kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _measure(arm: str, preset: str) -> dict:
    import torch

    from node.model import Llama
    from node.model import preset as model_preset
    from optim import DemoOptimizer
    from optim.local import InnerConfig, LocalSteps
    from optim.state import load_state, state_bytes, state_drift, state_size, write_state
    from protocol.run_config import OptimSection

    model = Llama(model_preset(preset))
    config = OptimSection().demo_config(10, model.config.dim)
    member = DemoOptimizer(model.named_parameters(), config)
    member_local = LocalSteps(model.parameters(), InnerConfig(steps=2, lr=1e-3))
    scratch = DemoOptimizer(model.named_parameters(), config)
    scratch_local = LocalSteps(model.parameters(), InnerConfig(steps=2, lr=1e-3))
    with torch.no_grad():
        for t in member.momentum:
            t.normal_()
    size = state_size(member, member_local)
    Path("/proc/self/clear_refs").write_text("5")
    base = _kib("VmRSS")
    if arm == "bytes":
        served = state_bytes(member, member_local)
        fetched = bytearray(served)  # what the validator received
        load_state(scratch, fetched, scratch_local)
        drift = state_drift(scratch, fetched, scratch_local)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "state"
            with open(path, "wb") as f:
                write_state(member, f, member_local)
            with open(path, "rb") as f:
                load_state(scratch, f, scratch_local)
                drift = state_drift(scratch, f, scratch_local)
    assert drift == 0.0
    return {"arm": arm, "state_mb": size / 1e6, "peak_added_mb": (_kib("VmHWM") - base) * 1024 / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="125m")
    ap.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)  # one arm, in a child process
    args = ap.parse_args()
    if args.arm:
        print(json.dumps(_measure(args.arm, args.preset)))
        return
    rows = []
    for arm in ARMS:
        out = subprocess.run(
            [sys.executable, __file__, "--preset", args.preset, "--arm", arm],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for r in rows:
        print(f"{r['arm']:>5}: state {r['state_mb']:.0f} MB, peak memory added {r['peak_added_mb']:.0f} MB")
    print(f"files / bytes peak: {rows[1]['peak_added_mb'] / rows[0]['peak_added_mb']:.3f}")


if __name__ == "__main__":
    main()
