"""Detection and false-positive rates of the validators' check, per dishonest kind: replay (the
verdict nodes give) side by side with the sign-agreement baseline it replaced.

Runs the sim's training (configs/sim.toml: tiny model, stdlib corpus, Adam-preconditioned DeMo)
in one process with 4 honest replicas for --rounds rounds per --seeds seed. Every round, every
honest contribution is checked (false positives), and so is each dishonest one made for
replica 0's slot: trained on other data (a shadow replica with its own momentum that applies
the honest aggregate but whose payloads are never applied), replica 1's payload copied exactly
and with 10% of its signs flipped, its own payload sign-flipped, random noise, and its payload
from 3 rounds earlier. A check flags when replay's payload match is below validation.min_match
or its state drift above validation.max_state_drift, or when sign agreement is outside
[0.75, 0.999] (the band nodes used before replay).

Beside the whole-state replay, the sampled replay (optim/state_chunks.py) checks --sample leaves
(the run's validation.sample_chunks unless given) of the state, one per DCT chunk, drawn per
check: the bytes a check moves are then the payload, the two state indexes and the sampled
leaves instead of the whole state. Two more kinds probe
it: `flip5` (5% of the payload's signs flipped) and `state-lie` (an honest payload whose next
state has one leaf that is not the replay's).

    python scripts/bench_validation.py --seeds 3 --rounds 20 --plot docs/img/bench_validation.png
"""

import argparse
import copy
import hashlib
import json
import sys
from collections import defaultdict
from functools import partial
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import track
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.model import Llama  # noqa: E402
from node.run_data import build_data  # noqa: E402
from node.train import Trainer, use_deterministic_kernels  # noqa: E402
from node.validation import (  # noqa: E402
    payload_match,
    replay,
    sampled_replay,
    sign_agreement,
    start_replay,
)
from optim import DemoOptimizer, TensorPayload, decode, encode  # noqa: E402
from optim.state import state_bytes, state_drift  # noqa: E402
from optim.state_chunks import (  # noqa: E402
    drawn_hashes,
    index_bytes,
    leaf_counts,
    load_leaves,
    make_index,
    sample,
)
from protocol.assignment import assign_batches, round_batch_ids  # noqa: E402
from protocol.run_config import RunConfig, load  # noqa: E402
from scripts import tampering  # noqa: E402
from scripts.plotting import save_png, subplots  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SIGN_BAND = (0.75, 0.999)
KINDS = ("honest", "other-data", "copy", "copy+noise", "flip", "flip5", "noise", "stale", "state-lie")
NODES = 4


def noisy_copy(spec, payload: bytes, seed: int) -> bytes:
    p, rng = decode(spec, payload), np.random.default_rng(seed)
    tensors = [
        TensorPayload(t.groups, t.indices, np.where(rng.random(t.values.shape) < 0.1, -t.values, t.values))
        for t in p.tensors
    ]
    return encode(spec, p.step, tensors)


class Run:
    """NODES honest replicas plus an other-data shadow, and a validator following the model."""

    def __init__(self, cfg: RunConfig, rounds: int, seed: int, sample_leaves: int):
        self.cfg, self.seed, self.sample_leaves = cfg, seed, sample_leaves
        base = Llama(cfg.model.model_config(), seed=seed)
        data = build_data(cfg)
        self.models = [copy.deepcopy(base) for _ in range(NODES + 2)]  # + shadow + validator
        demo = cfg.optim.demo_config(rounds, base.config.dim)
        self.opts = [DemoOptimizer(m.named_parameters(), demo) for m in self.models]
        self.trainers = [Trainer(m, data, 4, torch.device("cpu")) for m in self.models]
        self.spec = self.opts[0].spec
        self.history: list[dict] = []
        self.grads: dict[tuple, list[torch.Tensor]] = {}  # the round's gradient per target

    def round(self, r: int) -> list[tuple]:
        """(kind, replay match, state drift, sign agreement, sampled payload match, sampled state
        match, bytes of the whole-state check, bytes of the sampled check) of every check."""
        ids = [f"n{i}" for i in range(NODES)]
        self.grads = {}
        batches = assign_batches(self.seed * 1000 + r, ids, round_batch_ids(r, self.cfg.rounds.global_batch))
        batches["shadow"] = [b + tampering.OTHER_DATA_OFFSET for b in batches["n0"]]
        sent = {}
        for name, trainer, opt in zip([*ids, "shadow"], self.trainers, self.opts):
            trainer.accumulate_gradients(batches[name])
            opt.step = r
            before = (state_bytes(opt), index_bytes(opt))
            sent[name] = (opt.compress(), before, (state_bytes(opt), index_bytes(opt)))
        self.history.append(sent)
        checks = [("honest", sent[n], batches[n]) for n in ids]
        own, before, after = sent["n0"]
        dishonest = {
            "other-data": sent["shadow"][0],
            "copy": sent["n1"][0],
            "copy+noise": noisy_copy(self.spec, sent["n1"][0], r),
            "flip": tampering.flip(self.spec, own),
            "flip5": tampering.flip_share(self.spec, own, 0.05, r),
            "noise": tampering.noise(self.spec, own, r),
        }
        if r >= tampering.STALE_ROUNDS:
            dishonest["stale"] = tampering.restamp(self.spec, self.history[-4]["n0"][0], r, r)
        for kind, payload in dishonest.items():
            states = sent["shadow"][1:] if kind == "other-data" else (before, after)
            checks.append((kind, (payload, *states), batches["n0"]))
        checks.append(("state-lie", (own, before, lie_in_one_leaf(self.opts[0], after, r)), batches["n0"]))
        rows = [(kind, *self._check(r, *sent_, target)) for kind, sent_, target in checks]
        for opt in self.opts:
            opt.apply({n: sent[n][0] for n in ids})
        return rows

    def _check(self, r: int, payload: bytes, before: tuple, after: tuple, target_batches) -> tuple:
        validator, scratch = self.trainers[-1], self.opts[-1]
        self._target_gradient(target_batches)
        p = decode(self.spec, payload)
        agreement = sign_agreement(p, [q.grad for q in validator.model.parameters()], self.spec).agreement
        start_replay(scratch, before[0])
        out = replay(scratch, r)
        match = payload_match(p, out.payload, self.spec, values=self.cfg.validation.exact)
        same = out.state_after == hashlib.sha256(after[0]).digest()
        drift = 0.0 if same else state_drift(scratch, after[0])
        self._target_gradient(target_batches)
        moved = [len(payload)]

        def fetch(blobs: dict, digest: bytes, limit: int) -> bytes:
            moved.append(len(blobs[digest]))
            return blobs[digest]

        n = sum(leaf_counts(scratch))
        drawn = sample(self.seed.to_bytes(8, "little"), b"n0", r, n, self.sample_leaves)
        (root, blobs), (after_root, after_blobs) = before[1], after[1]
        hashes = drawn_hashes(scratch, root, partial(fetch, blobs), drawn)
        load_leaves(scratch, {j: fetch(blobs, h, 0) for j, h in hashes.items()})
        claimed = drawn_hashes(scratch, after_root, partial(fetch, after_blobs), drawn)
        sampled = sampled_replay(scratch, r, p, drawn, claimed)
        sampled_bytes = sum(moved) + len(root) + len(after_root)
        whole_bytes = len(payload) + len(before[0])
        return match, drift, agreement, sampled.payload_match, sampled.state_match, whole_bytes, sampled_bytes

    def _target_gradient(self, target_batches) -> None:
        """Leave this round's gradient of the target's batches in the validator's .grad: computed
        once per target and round, as deterministic kernels make every recomputation the same bits."""
        params = list(self.trainers[-1].model.parameters())
        key = tuple(target_batches)
        if key not in self.grads:
            self.trainers[-1].accumulate_gradients(target_batches)
            self.grads[key] = [q.grad.clone() for q in params]
        for q, g in zip(params, self.grads[key]):
            q.grad = g.clone()


def lie_in_one_leaf(opt: DemoOptimizer, after: tuple, r: int) -> tuple:
    """An honest next state whose tree names one leaf (drawn by round) that is not its own."""
    whole, (root, blobs) = after
    n = sum(leaf_counts(opt))
    hashes = list(drawn_hashes(opt, root, lambda d, limit: blobs[d], range(n)).values())
    hashes[r * 7919 % n] = hashlib.sha256(b"a lie").digest()
    forged, pages = make_index(opt, hashes)
    blobs = {**blobs, **{hashlib.sha256(p).digest(): p for p in pages}}
    return whole[:-4] + b"\x00\x00\x80\x3f", (forged, blobs)  # and a 1.0 in the whole one


def measure(cfg: RunConfig, seeds: int, rounds: int, sample_leaves: int) -> dict[str, list[tuple]]:
    scores = defaultdict(list)
    for seed in range(seeds):
        run = Run(cfg, rounds, seed, sample_leaves)
        for r in track(
            range(rounds), description=f"seed {seed}", transient=True, console=Console(stderr=True)
        ):
            for kind, *row in run.round(r):
                scores[kind].append((r, *row))
    return scores


def summarize(cfg: RunConfig, scores) -> list[dict]:
    v = cfg.validation
    rows = []
    for kind in KINDS:
        s = np.array(scores[kind])
        replay_flag = ~np.array([v.accepts(m, d) for m, d in s[:, 1:3]])
        sampled_flag = ~np.array([v.accepts(m, 0.0 if st == 1.0 else np.inf) for m, st in s[:, 4:6]])
        sign_flag = (s[:, 3] < SIGN_BAND[0]) | (s[:, 3] > SIGN_BAND[1])
        early = s[:, 0] < 5
        rows.append(
            {
                "kind": kind,
                "checks": len(s),
                "replay_flagged": float(replay_flag.mean()),
                "sampled_flagged": float(sampled_flag.mean()),
                "bytes_whole": float(s[:, 6].mean()),
                "bytes_sampled": float(s[:, 7].mean()),
                "sign_flagged": float(sign_flag.mean()),
                "sign_flagged_rounds_0_4": float(sign_flag[early].mean()),
                "match_min": float(s[:, 1].min()),
                "match_max": float(s[:, 1].max()),
                "drift_min": float(s[:, 2].min()),
                "drift_max": float(s[:, 2].max()),
                "agreement_mean": float(s[:, 3].mean()),
            }
        )
    return rows


def plot(scores, path: Path) -> None:
    fig, (a, b) = subplots(1, 2, figsize=(11, 4))
    for kind in KINDS:
        s = np.array(scores[kind])
        a.scatter(s[:, 0], s[:, 1], s=8, label=kind)
        b.scatter(s[:, 0], s[:, 3], s=8, label=kind)
    a.set(title="replay: payload match", xlabel="round", ylabel="match")
    b.set(title="baseline: sign agreement", xlabel="round", ylabel="agreement")
    b.axhspan(*SIGN_BAND, color="green", alpha=0.1)
    a.legend(fontsize=7)
    save_png(fig, path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "sim.toml")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--sample", type=int, help="state leaves a sampled replay checks (default: the run's)")
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--json", action="store_true", help="print the rows as JSON on stdout")
    args = ap.parse_args(argv)
    use_deterministic_kernels()  # the node's: what a validator's replay runs under
    cfg = load(args.config)
    args.sample = args.sample or cfg.validation.sample_chunks
    scores = measure(cfg, args.seeds, args.rounds, args.sample)
    rows = summarize(cfg, scores)
    if args.plot:
        plot(scores, args.plot)
    if args.json:
        print(json.dumps({"rows": rows}))
        return
    table = Table(title=f"flagged share per kind ({args.seeds} seeds x {args.rounds} rounds)")
    columns = ("kind", "checks", "replay", f"sampled ({args.sample})", "sign band", "sign, rounds 0-4")
    for col in (*columns, "match range", "min drift"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["kind"],
            str(r["checks"]),
            f"{r['replay_flagged']:.1%}",
            f"{r['sampled_flagged']:.1%}",
            f"{r['sign_flagged']:.1%}",
            f"{r['sign_flagged_rounds_0_4']:.1%}",
            f"{r['match_min']:.3f}-{r['match_max']:.3f}",
            f"{r['drift_min']:.2g}",
        )
    console = Console(width=120)
    console.print(table)
    whole, sampled = rows[0]["bytes_whole"], rows[0]["bytes_sampled"]
    console.print(
        f"bytes per check: whole state {whole:,.0f}, sampled {sampled:,.0f} ({whole / sampled:.1f}x fewer)"
    )


if __name__ == "__main__":
    main()
