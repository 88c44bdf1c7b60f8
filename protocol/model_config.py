"""The model's shape: Llama configurations, the named presets, and the parameter names and shapes
they imply (Hugging Face `LlamaForCausalLM` names, in `named_parameters` order).

This lives in `protocol/` because the coordinator decodes payloads against the parameter shapes
without importing the node's model; tests pin `parameter_shapes` to `node.model.Llama`.
"""

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 259
    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2
    ffn_dim: int = 352
    max_seq_len: int = 256
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    # rotary frequencies stretched for long contexts, as Hugging Face's rope_scaling: "default"
    # (none), "linear" (every frequency / factor) or "llama3" (Llama 3.1's: low frequencies /
    # factor, high ones kept, a smooth blend between)
    rope_type: str = "default"
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0  # llama3 only
    rope_high_freq_factor: float = 4.0  # llama3 only
    rope_original_max_seq_len: int = 8192  # llama3 only: the context the model was trained at

    def check(self) -> None:
        """ValueError unless every field has its type and a size a real model could have (a
        config can come from a peer: a hostile one must not make us allocate terabytes)."""
        for name, kind, low, high in _BOUNDS:
            value = getattr(self, name)
            if (
                not isinstance(value, kind)
                or isinstance(value, bool) != (kind is bool)
                or not low <= value <= high
            ):
                raise ValueError(
                    f"model config {name} = {value!r} is not a {kind.__name__} in [{low}, {high}]"
                )
        if self.dim % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"dim {self.dim}, heads {self.n_heads}, kv heads {self.n_kv_heads} do not divide"
            )
        if (self.dim // self.n_heads) % 2:
            raise ValueError("head dimension must be even for rotary embeddings")
        if self.rope_type not in ROPE_TYPES:
            raise ValueError(
                f"model config rope_type = {self.rope_type!r} is not one of {', '.join(ROPE_TYPES)}"
            )
        if self.rope_type == "llama3" and not self.rope_low_freq_factor < self.rope_high_freq_factor:
            raise ValueError("model config rope_low_freq_factor must be below rope_high_freq_factor")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


_BOUNDS = (  # field, type, smallest, largest
    ("vocab_size", int, 2, 1 << 20),
    ("dim", int, 2, 1 << 16),
    ("n_layers", int, 1, 512),
    ("n_heads", int, 1, 1024),
    ("n_kv_heads", int, 1, 1024),
    ("ffn_dim", int, 1, 1 << 18),
    ("max_seq_len", int, 2, 1 << 20),
    ("rope_theta", float, 1.0, 1e9),
    ("norm_eps", float, 1e-12, 1e-2),
    ("tie_embeddings", bool, False, True),
    ("rope_factor", float, 1.0, 1024.0),
    ("rope_low_freq_factor", float, 1e-3, 1e3),
    ("rope_high_freq_factor", float, 1e-3, 1e3),
    ("rope_original_max_seq_len", int, 2, 1 << 20),
)
ROPE_TYPES = ("default", "linear", "llama3")

PRESETS = {
    "tiny": ModelConfig(),  # ~0.8M parameters: tests and CPU simulations (byte vocabulary)
    "20m": ModelConfig(
        vocab_size=32000,
        dim=320,
        n_layers=8,
        n_heads=8,
        n_kv_heads=4,
        ffn_dim=864,
        max_seq_len=2048,
        tie_embeddings=True,
    ),
    "125m": ModelConfig(
        vocab_size=32000, dim=768, n_layers=12, n_heads=12, n_kv_heads=4, ffn_dim=2048, max_seq_len=2048
    ),
    "1b": ModelConfig(
        vocab_size=32000,
        dim=2048,
        n_layers=16,
        n_heads=32,
        n_kv_heads=8,
        ffn_dim=8192,
        max_seq_len=2048,
        rope_theta=500000.0,
        tie_embeddings=True,
    ),
}


def preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets: {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def parameter_shapes(cfg: ModelConfig) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every parameter, as `Llama(cfg).named_parameters()` lists them (a tied
    head shares the embedding and is not listed)."""
    kv = cfg.n_kv_heads * cfg.head_dim
    out = [("model.embed_tokens.weight", (cfg.vocab_size, cfg.dim))]
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        out += [
            (p + "input_layernorm.weight", (cfg.dim,)),
            (p + "self_attn.q_proj.weight", (cfg.dim, cfg.dim)),
            (p + "self_attn.k_proj.weight", (kv, cfg.dim)),
            (p + "self_attn.v_proj.weight", (kv, cfg.dim)),
            (p + "self_attn.o_proj.weight", (cfg.dim, cfg.dim)),
            (p + "post_attention_layernorm.weight", (cfg.dim,)),
            (p + "mlp.gate_proj.weight", (cfg.ffn_dim, cfg.dim)),
            (p + "mlp.up_proj.weight", (cfg.ffn_dim, cfg.dim)),
            (p + "mlp.down_proj.weight", (cfg.dim, cfg.ffn_dim)),
        ]
    out.append(("model.norm.weight", (cfg.dim,)))
    if not cfg.tie_embeddings:
        out.append(("lm_head.weight", (cfg.vocab_size, cfg.dim)))
    return out
