"""A dishonest node for the simulator: `eranos node run` with one of scripts/adversaries.py's
behaviours injected. Production nodes have no way to become one.

    python scripts/adversary_node.py --adversary KIND [--partners HEX,...] <eranos node run options>
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node import cli  # noqa: E402
from protocol.console import setup_logging  # noqa: E402
from scripts.adversaries import KINDS  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--adversary", required=True, choices=sorted(KINDS))
    p.add_argument("--partners", default="", help="hex keys of the same operator's other identities")
    ours, rest = p.parse_known_args(argv)
    args = cli.parse_args(["run", *rest], prog="adversary_node.py")
    setup_logging(args.verbose)
    partners = frozenset(bytes.fromhex(k) for k in ours.partners.split(",") if k)
    cli.run(args, KINDS[ours.adversary](partners))


if __name__ == "__main__":
    main()
