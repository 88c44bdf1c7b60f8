"""What a process used, written when it exits (`usage.json`): CPU seconds, peak resident memory,
and the bytes and gossip messages (by type) its p2p host sent and received. The simulator's
summary and scripts/bench_scale.py read it."""

from __future__ import annotations

import json
import resource
from collections.abc import Mapping
from pathlib import Path

USAGE = "usage.json"


def write_usage(path: Path, traffic: Mapping[str, int], messages: Mapping[str, int]) -> None:
    own = resource.getrusage(resource.RUSAGE_SELF)
    record = {
        "cpu_s": round(own.ru_utime + own.ru_stime, 3),
        "peak_rss_mb": round(own.ru_maxrss / 1024, 1),  # Linux reports kilobytes
        "bytes": dict(traffic),
        "gossip_messages": dict(messages),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


def read_usage(path: Path) -> dict | None:
    """The record at `path`, or None when the process wrote none (killed, or still running)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
