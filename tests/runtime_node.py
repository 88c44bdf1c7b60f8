"""Members run for real on 127.0.0.1: a NodeRuntime with `configs/sim.toml` as a test changes it."""

from collections.abc import Callable
from pathlib import Path

import torch

from node.runtime import NodeRuntime
from p2p.host import Host
from p2p.identity import Identity
from protocol.run_config import RunConfig, load

ROOT = Path(__file__).resolve().parent.parent
COORDINATOR = Identity.from_seed(b"\x0c" * 32).public_key


def start_node(tmp_path: Path, seed: int, change: Callable[[RunConfig], RunConfig]) -> NodeRuntime:
    config = change(load(ROOT / "configs" / "sim.toml"))
    host = Host(Identity.from_seed(bytes([seed]) * 32), config.run.name).start()
    return NodeRuntime(config, host, COORDINATOR, tmp_path / f"n{seed}", torch.device("cpu"))


def stop(*nodes: NodeRuntime) -> None:
    for n in nodes:
        n.close()
        n.host.close()
