"""`eranos sim` as a child process, for the benchmarks that compare whole runs: its output goes
to `out/sim.out`, and what it leaves is its summary.json (None when it wrote none)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_sim(flags: list[str], out: Path) -> dict | None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "eranos", "sim", *flags, "--out", str(out)]
    with open(out / "sim.out", "w") as log:
        subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        return json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return None
