"""The simulator's processes: nodes below the coordinator's CPU priority."""

import os
import sys

from scripts.sim_args import parse_args


def test_nodes_run_below_the_coordinators_cpu_priority(tmp_path):
    from scripts.sim import NODE_NICENESS, Sim

    sim = Sim(parse_args(["--out", str(tmp_path)]))
    sim.node_cmd = lambda i: [sys.executable, "-c", "import time; time.sleep(30)"]
    try:
        sim.spawn_node(0)
        sim.spawn("coordinator", [sys.executable, "-c", "import time; time.sleep(30)"])
        niceness = {name: os.getpriority(os.PRIO_PROCESS, p.pid) for name, p in sim.procs.items()}
    finally:
        sim.stop_processes()
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert niceness == {"node-0": min(19, own + NODE_NICENESS), "coordinator": own}
