"""Hugging Face checkpoints of a node's model: `eranos export WORKDIR -o DIR`, and the periodic
ones a node writes during a run (`[checkpoint] every_rounds`).

A node's work directory holds its current weights (`weights.bin`, the canonical stream whose
sha256 is the model hash), the run config it trains under (`run.toml`) and its round log; an
export turns them into a directory transformers opens with `LlamaForCausalLM.from_pretrained`:
model.safetensors, config.json, generation_config.json, the tokenizer when one is given, and
`export.json` naming the round and the model hash.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from node.audit import read_log
from node.checkpoint import CheckpointError, read_weights, save
from node.model import Llama
from protocol.console import HelpFormatter, Parser
from protocol.run_config import ConfigError, RunConfig
from protocol.run_config import load as load_config

RUN_CONFIG, WEIGHTS = "run.toml", "weights.bin"


def export(model: Llama, out: Path, round: int, tokenizer: Path | None = None) -> str:
    """Write the Hugging Face checkpoint of `model` after `round`; its model hash."""
    digest = save(out, model, meta={"round": round})
    (out / "generation_config.json").write_text(json.dumps({"_from_model_config": True}, indent=2))
    if tokenizer is not None:
        shutil.copyfile(tokenizer, out / "tokenizer.json")
    (out / "export.json").write_text(json.dumps({"round": round, "model_hash": digest}, indent=2))
    return digest


def model_of(workdir: Path) -> tuple[Llama, RunConfig, int]:
    """The node's current model, its run config, and the last round it applied (-1: none)."""
    config = load_config(workdir / RUN_CONFIG)
    model = Llama(config.model.model_config(), seed=config.model.seed)
    read_weights(model, workdir / WEIGHTS)
    rounds = [entry.round for entry in read_log(workdir)]
    return model, config, max(rounds, default=-1)


def main(argv: list[str] | None = None, prog: str = "eranos export") -> None:
    description = "Write a node's current model as a Hugging Face checkpoint."
    p = Parser(prog=prog, description=description, formatter_class=HelpFormatter)
    p.add_argument("workdir", type=Path, help="the node's work directory (eranos-node-<key>)")
    p.add_argument("-o", "--out", required=True, type=Path, help="the checkpoint directory to write")
    p.add_argument("--tokenizer", type=Path, help="a tokenizer.json to ship with it")
    args = p.parse_args(argv)
    for needed in (args.workdir / RUN_CONFIG, args.workdir / WEIGHTS):
        if not needed.is_file():
            raise SystemExit(f"{prog}: {needed} is missing: is {args.workdir} a node's work directory?")
    try:
        model, _, round = model_of(args.workdir)
        digest = export(model, args.out, round, args.tokenizer)
    except (CheckpointError, ConfigError, OSError) as exc:
        raise SystemExit(f"{prog}: {exc}") from None
    print(f"wrote {args.out}: the model after round {round}, hash {digest}")
