"""Checkpoints of a bench_convergence seed: both arms' weights and optimizer states after a step.

A 1000-step run at 16 members takes 90 minutes on this machine, so a run longer than what is
left of a session continues from its last checkpoint, and a run can branch at a step into
variants of DeMo's schedule that agree with it up to that step (the endgame of a wsd decay
costs the last fifth of the steps, not the whole run). Everything else that changes the
arithmetic must match the checkpoint's run exactly; a mismatch is refused by name.
"""

import argparse
import os
from pathlib import Path

import torch

FORMAT = 1
# flags that change no arithmetic of one seed's run: what is printed, which seeds run, where
# AdamW-DDP's curve may come from, and the checkpointing itself
BOOKKEEPING = ("json", "plot", "seeds", "seconds", "adamw_from", "checkpoint", "checkpoint_every")
# flags that only shape DeMo's learning rate over the exchanges: a checkpoint continues under
# other values of them only where the lr of every exchange it has taken is the same
SCHEDULE = ("lr", "lr_width", "schedule", "warmup", "decay_fraction", "final_ratio")


def path_for(directory: Path, seed: int) -> Path:
    return directory / f"seed-{seed}.pt"


def save(path: Path, args: argparse.Namespace, corpus_sha256: str, step: int, arms: dict) -> None:
    """Write the seed's state after `step` steps; `arms` holds runner, baseline, adamw, curve,
    payload_bytes and adamw_trained. Written beside and renamed, so a kill leaves the last one."""
    runner, first = arms["runner"], arms["runner"].optimizers[0]
    state = {
        "format": FORMAT,
        "args": {k: v for k, v in vars(args).items() if k not in BOOKKEEPING},
        "corpus_sha256": corpus_sha256,
        "step": step,
        "demo_lrs": [first.config.schedule.lr_at(r) for r in range(first.step)],
        "curve": arms["curve"],
        "payload_bytes": arms["payload_bytes"],
        "adamw_trained": arms["adamw_trained"],
        "model": runner.models[0].state_dict(),
        "optimizers": [opt.state_dict() for opt in runner.optimizers],
    }
    if arms["adamw_trained"]:
        state |= {"baseline": arms["baseline"].state_dict(), "adamw": arms["adamw"].state_dict()}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def load(path: Path, args: argparse.Namespace, corpus_sha256: str, arms: dict) -> dict:
    """Load a checkpoint into `arms` (as for `save`) if this run may continue it; the saved
    step, curve and payload sizes. SystemExit naming what differs otherwise."""
    try:
        state = torch.load(path, weights_only=True)
    except Exception as exc:  # a truncated or foreign file fails in pickle, zip or torch alike
        raise SystemExit(f"{path}: unreadable checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise SystemExit(f"{path}: not a checkpoint of this benchmark")
    differ = _differences(state, args, corpus_sha256, arms)
    if differ:
        raise SystemExit(f"{path}: its run differs from this one in {', '.join(differ)}")
    runner = arms["runner"]
    for model in runner.models:
        model.load_state_dict(state["model"])
    for opt, saved in zip(runner.optimizers, state["optimizers"], strict=True):
        opt.load_state_dict(saved)
    if arms["adamw_trained"]:
        arms["baseline"].load_state_dict(state["baseline"])
        arms["adamw"].load_state_dict(state["adamw"])
    return {k: state[k] for k in ("step", "curve", "payload_bytes")}


def _differences(state: dict, args: argparse.Namespace, corpus_sha256: str, arms: dict) -> list[str]:
    saved = state["args"]
    ours = {k: v for k, v in vars(args).items() if k not in BOOKKEEPING}
    changed = [k for k in sorted(ours.keys() | saved.keys()) if ours.get(k) != saved.get(k)]
    differ = [k for k in changed if k not in SCHEDULE]
    schedule = arms["runner"].optimizers[0].config.schedule
    if [schedule.lr_at(r) for r in range(len(state["demo_lrs"]))] != state["demo_lrs"]:
        differ.append(f"DeMo's lr before the checkpoint ({', '.join(k for k in changed if k in SCHEDULE)})")
    if corpus_sha256 != state["corpus_sha256"]:
        differ.append("corpus")
    if arms["adamw_trained"] and not state["adamw_trained"]:
        differ.append("AdamW-DDP's arm (not trained there: pass --adamw-from)")
    return differ
