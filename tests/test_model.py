import math
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from node.checkpoint import load_model, model_hash, save
from node.model import PRESETS, Llama, preset, rope_frequencies


def test_presets_have_their_advertised_sizes():
    sizes = {name: Llama(preset(name)).num_params() for name in ("tiny", "20m")}
    assert 0.7e6 < sizes["tiny"] < 1.2e6
    assert 18e6 < sizes["20m"] < 22e6


def test_larger_presets_are_valid_configs():
    for name in ("125m", "1b"):
        PRESETS[name].check()


def test_same_seed_gives_bit_identical_weights_in_another_process():
    code = (
        "from node.model import Llama, preset; from node.checkpoint import model_hash; "
        "print(model_hash(Llama(preset('tiny'), seed=7)))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert other == model_hash(Llama(preset("tiny"), seed=7))


def test_different_seeds_give_different_weights():
    assert model_hash(Llama(preset("tiny"), seed=1)) != model_hash(Llama(preset("tiny"), seed=2))


def test_parameter_names_follow_hugging_face_llama():
    names = {n for n, _ in Llama(preset("tiny", n_layers=1)).named_parameters()}
    assert names == {
        "model.embed_tokens.weight",
        "model.norm.weight",
        "lm_head.weight",
        "model.layers.0.input_layernorm.weight",
        "model.layers.0.post_attention_layernorm.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.self_attn.v_proj.weight",
        "model.layers.0.self_attn.o_proj.weight",
        "model.layers.0.mlp.gate_proj.weight",
        "model.layers.0.mlp.up_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
    }


def test_tied_embeddings_share_one_parameter():
    model = Llama(preset("tiny", tie_embeddings=True))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert "lm_head.weight" not in dict(model.named_parameters())


def test_attention_is_causal():
    model = Llama(preset("tiny")).eval()
    x = torch.randint(0, 259, (1, 16))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 1) % 259
    assert torch.allclose(model(x)[0][0, :10], model(y)[0][0, :10], atol=1e-6)


def test_overlong_sequences_are_refused():
    with pytest.raises(ValueError):
        Llama(preset("tiny", max_seq_len=8))(torch.zeros(1, 9, dtype=torch.long))


@pytest.mark.parametrize("tied", [False, True])
def test_checkpoint_loads_into_transformers_with_equal_logits(tmp_path, tied):
    transformers = pytest.importorskip("transformers")
    model = Llama(preset("tiny", tie_embeddings=tied), seed=3).eval()
    save(tmp_path, model)
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path, torch_dtype=torch.float32).eval()
    x = torch.randint(0, 259, (2, 32))
    with torch.no_grad():
        assert torch.allclose(hf(x).logits, model(x)[0], atol=1e-4)


def test_hugging_face_llama_directory_loads_with_equal_logits(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    hf.save_pretrained(tmp_path, safe_serialization=True)
    model = load_model(tmp_path).eval()
    x = torch.randint(0, 300, (2, 20))
    with torch.no_grad():
        assert torch.allclose(model(x)[0], hf(x).logits, atol=1e-4)


@pytest.mark.parametrize("name", ["tiny", "20m"])
def test_protocol_parameter_shapes_match_the_model(name):
    from protocol.model_config import parameter_shapes

    cfg = preset(name)
    expected = [(n, tuple(p.shape)) for n, p in Llama(cfg).named_parameters()]
    assert parameter_shapes(cfg) == expected


@pytest.mark.parametrize("select", ["chunk", "tensor"])
def test_the_coordinators_payload_spec_is_the_nodes(select):
    from coordinator.service import param_spec
    from optim import DemoOptimizer
    from protocol.run_config import load

    cfg = load("configs/sim.toml")
    cfg = replace(cfg, optim=replace(cfg.optim, select=select))
    node_spec = DemoOptimizer(Llama(preset(cfg.model.preset)).named_parameters(), cfg.demo_config()).spec
    assert param_spec(cfg).digest == node_spec.digest


def test_activation_checkpointing_gives_the_same_gradients_to_the_bit():
    def grads(checkpointing: bool) -> list[torch.Tensor]:
        model = Llama(preset("tiny"), seed=3)
        model.activation_checkpointing = checkpointing
        idx = torch.randint(0, model.config.vocab_size, (2, 33), generator=torch.Generator().manual_seed(1))
        _, loss = model(idx[:, :-1], idx[:, 1:])
        loss.backward()
        return [p.grad for p in model.parameters()]

    assert all(torch.equal(a, b) for a, b in zip(grads(False), grads(True), strict=True))


def test_activation_checkpointing_keeps_fewer_activations_for_the_backward_pass():
    def saved_bytes(checkpointing: bool) -> int:
        model = Llama(preset("tiny"))
        model.activation_checkpointing = checkpointing
        idx = torch.zeros((2, 64), dtype=torch.long)
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(idx[:, :-1], idx[:, 1:])
        return total

    assert saved_bytes(True) < saved_bytes(False) / 2


ROPE_SCALINGS = [
    {"rope_type": "linear", "factor": 4.0},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 64},
]  # fmt: skip


@pytest.mark.parametrize("scaling", ROPE_SCALINGS, ids=["linear", "llama3"])
def test_a_hugging_face_llama_with_rope_scaling_loads_and_exports_with_equal_logits(tmp_path, scaling):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(
        vocab_size=300, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, rope_theta=500000.0, rope_scaling=scaling,
    )  # fmt: skip
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    model = load_model(tmp_path / "hf").eval()
    assert model.config.rope_type == scaling["rope_type"] and model.config.rope_factor == scaling["factor"]
    x = torch.randint(0, 300, (2, 200))  # past the original context, where the scaling acts
    with torch.no_grad():
        assert torch.allclose(model(x)[0], hf(x).logits, atol=1e-4)
        save(tmp_path / "ours", model)
        back = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "ours", torch_dtype=torch.float32)
        assert torch.allclose(back.eval()(x).logits, hf(x).logits, atol=1e-4)


def test_the_llama3_scaling_stretches_low_frequencies_keeps_high_ones_and_blends_between():
    cfg = preset(
        "tiny", rope_type="llama3", rope_factor=8.0, rope_original_max_seq_len=64, rope_theta=500000.0
    )
    plain = rope_frequencies(preset("tiny", rope_theta=500000.0), torch.device("cpu"))
    scaled = rope_frequencies(cfg, torch.device("cpu"))
    wavelen = 2 * math.pi / plain
    assert torch.equal(scaled[wavelen < 64 / 4], plain[wavelen < 64 / 4])
    assert torch.equal(scaled[wavelen > 64], plain[wavelen > 64] / 8)
    between = (wavelen > 64 / 4) & (wavelen < 64)
    assert (
        between.any() and ((scaled[between] < plain[between]) & (scaled[between] > plain[between] / 8)).all()
    )
