"""#14's acceptance run: the 125m preset fine-tuned from a checkpoint the run's own export wrote,
on the stdlib corpus tokenized by a 32k BPE tokenizer trained here and prepared into shards by
`eranos prepare-data`, by 3 nodes on this machine and a fourth that joins mid-run; the nodes
fetch the model and the shards from the coordinator. Then the final weights are exported and
loaded in transformers, which generates from them.

    python scripts/accept_125m.py                       # out/accept: report.json and the sim's output
    python scripts/accept_125m.py --rounds 6 --nodes 4 --join 3@2

Prints per node: peak RSS, wall time per round and per phase, bytes moved per check, and the
joiner's time from start to its first training.
"""

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eranos import timeline  # noqa: E402
from eranos.prepare_data import main as prepare_data  # noqa: E402
from node.data import stdlib_files  # noqa: E402
from node.export import export  # noqa: E402
from node.export import main as export_main  # noqa: E402
from node.model import Llama  # noqa: E402
from optim import DemoOptimizer  # noqa: E402
from optim.state import state_size  # noqa: E402
from optim.state_chunks import PAGE, leaf_counts, leaf_size, locate, root_limit, sample  # noqa: E402
from protocol.events import read_events  # noqa: E402
from protocol.manifest import load as load_manifest  # noqa: E402
from protocol.model_config import preset  # noqa: E402
from protocol.run_config import dumps  # noqa: E402
from protocol.run_config import load as load_config  # noqa: E402
from scripts.sim import run_sim  # noqa: E402
from scripts.sim_args import parse_args  # noqa: E402

VOCAB = 32000


def train_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["</s>"], show_progress=False)
    tok.train([str(f) for f in stdlib_files()], trainer)
    tok.save(str(path))


def run_config(out: Path, digest: str, args: argparse.Namespace) -> Path:
    """configs/sim.toml with the model, data and timeouts of this run (paths relative to `out`)."""
    base = load_config(ROOT / "configs" / "sim.toml")
    config = replace(
        base,
        run=replace(base.run, name="accept-125m"),
        model=replace(base.model, preset="125m", path="start"),
        data=replace(
            base.data, manifest="data/manifest.json", manifest_sha256=digest,
            seq_len=args.seq_len, batch_size=2, micro_batch=2,
        ),
        rounds=replace(
            base.rounds, min_nodes=3, global_batch=2 * args.nodes, round_timeout_s=900.0,
            verdict_timeout_s=600.0, warmup_timeout_s=1800.0, heartbeat_timeout_s=300.0,
            cooldown_s=5.0, validation_rate=args.validation_rate, audit_rate=0.0,
        ),
        eval=replace(base.eval, every_rounds=args.rounds, sequences=16),
    )  # fmt: skip
    path = out / "run.toml"
    path.write_text(dumps(config))
    return path


def phases(sim_out: Path) -> dict:
    """Per node: seconds per phase, summed over the run, and the rounds it trained."""
    events = timeline.load(sim_out)
    per_node = {}
    for process, evs in events.items():
        if process == "coordinator":
            continue
        rounds = {e.round for e in evs if e.name == "train"}
        per_node[process] = {
            "seconds": {k: round(v, 1) for k, v in timeline.totals({process: evs})[process].items()},
            "rounds_trained": len(rounds),
        }
    return per_node


def joiner_startup(node_dir: Path) -> dict[str, float]:
    """The joiner's start-up stages, and its process start to its first training."""
    return timeline.startup(read_events(node_dir / "events.jsonl"))


def bytes_per_check(config, payload: float) -> dict:
    """What one check moves: the sampled replay's (payload; the roots and the pages the drawn
    leaves are on, of the states before and after; the drawn leaves), for one draw, against the
    whole state's."""
    model = Llama(preset("125m"))
    opt = DemoOptimizer(model.named_parameters(), config.optim.demo_config(1, model.config.dim))
    n = sum(leaf_counts(opt))
    drawn = sample(b"a round's secret", b"a target", 0, n, config.validation.sample_chunks)
    pages = {j // PAGE for j in drawn}
    tree = root_limit(opt) + sum(32 * (min(n, (j + 1) * PAGE) - j * PAGE) for j in pages)
    leaves = sum(leaf_size(opt, locate(opt, j)[0]) for j in drawn)
    sampled, whole = payload + 2 * tree + leaves, payload + state_size(opt)
    return {
        "sampled": sampled,
        "whole_state": whole,
        "fewer": whole / sampled,
        "leaves": n,
        "pages": len(pages),
    }


def generate(checkpoint: Path, tokenizer: Path) -> str:
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    model = LlamaForCausalLM.from_pretrained(checkpoint)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer))
    ids = tok("def main(", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=16, do_sample=False)
    return tok.decode(out[0])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "accept")
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--join", default="3@2", help="NODE@ROUND: the node that joins mid-run")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--validation-rate", type=float, default=0.34)
    parser.add_argument("--timeout", type=float, default=5400.0)
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = out / "tokenizer.json"
    if not tokenizer.is_file():
        print("training a 32k BPE tokenizer on the stdlib", flush=True)
        train_tokenizer(tokenizer)
    if not (out / "data" / "manifest.json").is_file():
        prepare_data(["--tokenizer", str(tokenizer), "-o", str(out / "data"), "--shard-tokens", "400000",
                      *map(str, stdlib_files())])  # fmt: skip
    digest = load_manifest(out / "data" / "manifest.json").digest()
    start_hash = export(Llama(preset("125m"), seed=0), out / "start", round=-1, tokenizer=tokenizer)
    config = run_config(out, digest, args)
    sim_out = out / "sim"
    flags = ["--config", str(config), "--out", str(sim_out), "--nodes", str(args.nodes)]
    flags += ["--rounds", str(args.rounds), "--timeout", str(args.timeout)]
    flags += ["--join", args.join] if args.join else []
    summary = run_sim(parse_args(flags))
    joiner = int(args.join.partition("@")[0]) if args.join else None
    payload = summary["bytes_per_node_per_step"]
    final = out / "export"
    export_main([str(sim_out / "node-0"), "-o", str(final), "--tokenizer", str(tokenizer)])
    report = {
        "verdict": summary["verdict"],
        "start_model_hash": start_hash,
        "wall_seconds": summary["wall_seconds"],
        "rounds": len(summary["rounds_recorded_on_chain"]),
        "wall_seconds_per_round": summary["wall_seconds"] / max(1, len(summary["rounds_recorded_on_chain"])),
        "loss_per_round": summary["loss_per_round"],
        "eval_loss_per_round": summary["eval_loss_per_round"],
        "resources": summary["resources"],
        "peak_rss_mb": {
            p.parent.name: json.loads(p.read_text())["peak_rss_mb"]
            for p in sorted(sim_out.glob("node-*/usage.json"))
        },
        "phases": phases(sim_out),
        "bytes_per_check": bytes_per_check(load_config(config), payload),
        "joiner_startup_seconds": joiner_startup(sim_out / f"node-{joiner}") if joiner is not None else None,
        "members": [
            {k: m[k] for k in ("node", "points", "expected_points", "penalties")} for m in summary["members"]
        ],
        "generated": generate(final, tokenizer),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
