"""Checkpoints: safetensors weights, a Hugging Face-compatible config.json, optimizer state, and
the model hash every replica compares.

Nothing here unpickles: checkpoints arrive from peers, and safetensors plus JSON cannot execute
code on load. The optimizer's state (momentum, and the second moment when it preconditions) is
a second safetensors file with its step and spec digest in the metadata.
"""

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from node.model import Llama, ModelConfig
from optim import DemoOptimizer
from protocol.model_config import ROPE_TYPES
from protocol.run_config import RunConfig

log = logging.getLogger(__name__)

WEIGHTS, CONFIG, OPTIMIZER = "model.safetensors", "config.json", "optimizer.safetensors"
_OPT_GROUPS = ("momentum", "second_moment")  # tensors of the optimizer state, stored as "<group>/<param>"

_HF_KEYS = {  # our field -> Hugging Face LlamaConfig field
    "vocab_size": "vocab_size",
    "dim": "hidden_size",
    "n_layers": "num_hidden_layers",
    "n_heads": "num_attention_heads",
    "n_kv_heads": "num_key_value_heads",
    "ffn_dim": "intermediate_size",
    "max_seq_len": "max_position_embeddings",
    "norm_eps": "rms_norm_eps",
    "tie_embeddings": "tie_word_embeddings",
}


def _weight_stream(model: torch.nn.Module) -> Iterator[bytes | np.ndarray]:
    """The canonical weight bytes: per parameter in sorted name order, a header line
    "name|dtype|shape" and the raw little-endian bytes (a view of a host parameter's memory,
    not a copy: use each piece before the model changes)."""
    for name, p in sorted(model.named_parameters()):
        t = p.detach().to("cpu").contiguous()
        yield f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode()
        yield t.view(torch.uint8).numpy()


def model_hash(model: torch.nn.Module) -> str:
    """sha256 of the canonical weight bytes: also the blob id of `write_weights`' file, so a
    joiner fetches the model by its hash and the blob protocol verifies it."""
    digest = hashlib.sha256()
    for chunk in _weight_stream(model):
        digest.update(chunk)
    return digest.hexdigest()


def write_weights(model: torch.nn.Module, path: str | Path) -> bytes:
    """Write the canonical weight bytes to `path`; their sha256 (the model hash), computed as
    they are written."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for chunk in _weight_stream(model):
            f.write(chunk)
            digest.update(chunk)
    return digest.digest()


@torch.no_grad()
def read_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load canonical weight bytes into `model`; ValueError (model untouched) unless every
    header and size matches this model's parameters exactly."""
    loaded = []
    with open(path, "rb") as f:
        for name, p in sorted(model.named_parameters()):
            header = f"{name}|{p.dtype}|{tuple(p.shape)}\n".encode()
            if f.read(len(header)) != header:
                raise CheckpointError(f"{path}: weights do not match this model at {name}")
            raw = f.read(p.numel() * p.element_size())
            if len(raw) != p.numel() * p.element_size():
                raise CheckpointError(f"{path}: truncated at {name}")
            value = torch.frombuffer(bytearray(raw), dtype=p.dtype).view(p.shape)
            if not torch.isfinite(value).all():
                raise CheckpointError(f"{path}: non-finite weights at {name}")
            loaded.append((p, value))
        if f.read(1):
            raise CheckpointError(f"{path}: trailing bytes after the last parameter")
    for p, value in loaded:
        p.copy_(value)


def hf_config(cfg: ModelConfig, dtype: torch.dtype) -> dict:
    out = {hf: getattr(cfg, ours) for ours, hf in _HF_KEYS.items()}
    out.update(
        rope_theta=cfg.rope_theta,
        architectures=["LlamaForCausalLM"],
        model_type="llama",
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        head_dim=cfg.head_dim,
        torch_dtype=str(dtype).removeprefix("torch."),
    )
    if cfg.rope_type == "linear":
        out["rope_scaling"] = {"rope_type": "linear", "factor": cfg.rope_factor}
    elif cfg.rope_type == "llama3":
        out["rope_scaling"] = {
            "rope_type": "llama3",
            "factor": cfg.rope_factor,
            "low_freq_factor": cfg.rope_low_freq_factor,
            "high_freq_factor": cfg.rope_high_freq_factor,
            "original_max_position_embeddings": cfg.rope_original_max_seq_len,
        }
    return out


_ROPE_KEYS = {  # our field -> its key in Hugging Face's rope_scaling
    "rope_factor": "factor",
    "rope_low_freq_factor": "low_freq_factor",
    "rope_high_freq_factor": "high_freq_factor",
    "rope_original_max_seq_len": "original_max_position_embeddings",
}
# what this model computes as Hugging Face's LlamaForCausalLM does, and nothing else
_REQUIRED = {"hidden_act": "silu", "attention_bias": False, "mlp_bias": False}


def _rope(config: dict) -> dict:
    """Our rope fields from a Hugging Face config: transformers 5's rope_parameters (which holds
    rope_theta too), or rope_theta and rope_scaling beside it as transformers 4 wrote them."""
    if "rope_parameters" in config:
        raw, key = config["rope_parameters"], "rope_parameters"
    else:
        raw, key = config.get("rope_scaling"), "rope_scaling"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise CheckpointError(f"{key} = {raw!r} is not an object")
    theta = raw.get("rope_theta", config.get("rope_theta", ModelConfig.rope_theta))
    if isinstance(theta, int) and not isinstance(theta, bool):
        theta = float(theta)
    kind = raw.get("rope_type", raw.get("type", "default"))
    if kind not in ROPE_TYPES:
        raise CheckpointError(f"{key} rope_type = {kind!r} is not supported ({', '.join(ROPE_TYPES)} are)")
    needed = [] if kind == "default" else ["factor"] if kind == "linear" else list(_ROPE_KEYS.values())
    if unknown := set(raw) - {"rope_type", "type", "rope_theta", *needed}:
        raise CheckpointError(f"{key} {', '.join(sorted(map(str, unknown)))}: not supported with {kind!r}")
    if missing := [k for k in needed if k not in raw]:
        raise CheckpointError(f"{key} lacks {', '.join(missing)}, which {kind!r} needs")
    ours = {"rope_theta": theta, "rope_type": kind}
    for field, name in _ROPE_KEYS.items():
        if name in needed:
            value = raw[name]
            whole = isinstance(value, int) and not isinstance(value, bool)
            ours[field] = float(value) if whole and field != "rope_original_max_seq_len" else value
    return ours


class CheckpointError(ValueError):
    """A checkpoint or weights file (perhaps from a peer) is malformed, mismatched or non-finite."""


def config_from_hf(raw: dict) -> ModelConfig:
    if not isinstance(raw, dict):
        raise CheckpointError("config.json is not an object")
    if raw.get("model_type") != "llama":
        raise CheckpointError(f"not a Llama config: model_type {raw.get('model_type')!r}")
    for key, value in _REQUIRED.items():
        if raw.get(key, value) != value:
            raise CheckpointError(f"{key} = {raw[key]!r} is not supported (only {value!r})")
    defaults = {f.name: f.default for f in fields(ModelConfig)}
    values = {ours: raw.get(hf, defaults[ours]) for ours, hf in _HF_KEYS.items()}
    values["n_kv_heads"] = values["n_kv_heads"] or values["n_heads"]
    values.update(_rope(raw))
    cfg = ModelConfig(**values)
    try:
        cfg.check()
    except (ValueError, TypeError, ZeroDivisionError) as exc:
        raise CheckpointError(str(exc)) from None
    head_dim = raw.get("head_dim")
    if head_dim is not None and head_dim != cfg.head_dim:
        raise CheckpointError(
            f"head_dim = {head_dim!r} is not supported (only hidden_size / num_attention_heads)"
        )
    return cfg


def save(
    directory: str | Path, model: Llama, optimizer: DemoOptimizer | None = None, meta: dict | None = None
) -> str:
    """Write the checkpoint and return its model hash (also stored in config.json)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    digest = model_hash(model)
    weights = {n: p.detach().contiguous() for n, p in model.named_parameters()}
    save_file(weights, directory / WEIGHTS, metadata={"format": "pt", "eranos_model_hash": digest})
    dtype = next(model.parameters()).dtype
    config = hf_config(model.config, dtype) | {
        "eranos": {"model": asdict(model.config), "model_hash": digest} | (meta or {})
    }
    (directory / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))
    if optimizer is not None:
        state = optimizer.state_dict()
        metadata = {"step": str(state["step"]), "spec_digest": state["spec_digest"]}
        tensors = {f"{group}/{n}": t.contiguous() for group in _OPT_GROUPS for n, t in state[group].items()}
        save_file(tensors, directory / OPTIMIZER, metadata=metadata)
    return digest


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> Llama:
    """Load our checkpoint or a Hugging Face Llama directory (one or several *.safetensors files);
    CheckpointError for anything malformed, mismatched or non-finite."""
    directory = Path(directory)
    try:
        cfg = config_from_hf(json.loads((directory / CONFIG).read_text()))
    except (OSError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{directory / CONFIG}: {exc}") from None
    model = Llama(cfg)
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(directory.glob("*.safetensors")):
        if shard.name != OPTIMIZER:
            state.update(_load_safetensors(shard))
    if cfg.tie_embeddings:
        state.pop("lm_head.weight", None)
    expected = dict(model.named_parameters())
    if set(state) != set(expected):
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        raise CheckpointError(
            f"{directory}: weights do not match the config: missing {missing[:3]}, extra {unexpected[:3]}"
        )
    with torch.no_grad():
        for name, p in expected.items():
            if state[name].shape != p.shape:
                raise CheckpointError(
                    f"{directory}: {name} has shape {tuple(state[name].shape)}, config says {tuple(p.shape)}"
                )
            if not torch.isfinite(state[name]).all():
                raise CheckpointError(f"{directory}: non-finite weights in {name}")
            p.copy_(state[name])
    return model.to(device)


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except Exception as exc:  # safetensors raises its own SafetensorError and assorted others
        raise CheckpointError(f"{path}: not a safetensors file ({type(exc).__name__}: {exc})") from None


def load_optimizer(directory: str | Path, optimizer: DemoOptimizer) -> None:
    """Load the optimizer's state; CheckpointError (optimizer untouched) for anything malformed."""
    path = Path(directory) / OPTIMIZER
    tensors = _load_safetensors(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        step, digest = int(metadata["step"]), str(metadata["spec_digest"])
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: bad metadata ({exc})") from None
    if step < 0 or not all(torch.isfinite(t).all() for t in tensors.values()):
        raise CheckpointError(f"{path}: negative step or non-finite state")
    groups = {
        g: {k.split("/", 1)[1]: t for k, t in tensors.items() if k.startswith(g + "/")} for g in _OPT_GROUPS
    }
    try:
        optimizer.load_state_dict({"step": step, "spec_digest": digest, **groups})
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: does not fit this optimizer ({exc})") from None


def starting_model(config: RunConfig) -> Llama:
    """The run's starting weights when this machine holds them (`model.path` with the pinned
    hash); else the seeded initialization, which a node syncs from peers by the pinned hash."""
    path = Path(config.model.path) if config.model.path else None
    if path is not None and path.is_dir():
        try:
            model = load_model(path)
            if model_hash(model) == config.model.hash:
                return model
            log.warning("%s is not the run's starting model: fetching it from peers", path)
        except CheckpointError as exc:
            log.warning("cannot use %s (%s): fetching the starting model from peers", path, exc)
    return Llama(config.model.model_config(), seed=config.model.seed)
