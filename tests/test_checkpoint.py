import json
import re
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.checkpoint import (
    CheckpointError,
    config_from_hf,
    load_model,
    load_optimizer,
    model_hash,
    read_weights,
    save,
    write_weights,
)
from node.model import Llama, preset
from optim import DemoConfig, DemoOptimizer


def trained_pair():
    model = Llama(preset("tiny", n_layers=2), seed=1)
    opt = DemoOptimizer(model.named_parameters(), DemoConfig(topk=4, precondition="adam"))
    x = torch.randint(0, 259, (2, 17))
    model(x[:, :-1], x[:, 1:])[1].backward()
    opt.apply({"me": opt.compress()})
    return model, opt


def test_checkpoint_round_trips_with_an_equal_model_hash(tmp_path):
    model, opt = trained_pair()
    digest = save(tmp_path, model, opt)
    assert digest == model_hash(model)
    assert model_hash(load_model(tmp_path)) == digest
    assert json.loads((tmp_path / "config.json").read_text())["eranos"]["model_hash"] == digest


def test_optimizer_state_round_trips(tmp_path):
    model, opt = trained_pair()
    save(tmp_path, model, opt)
    fresh = DemoOptimizer(load_model(tmp_path).named_parameters(), DemoConfig(topk=4, precondition="adam"))
    load_optimizer(tmp_path, fresh)
    assert fresh.step == opt.step == 1
    assert all(torch.equal(a, b) for a, b in zip(fresh.momentum, opt.momentum))
    assert all(torch.equal(a, b) for a, b in zip(fresh.second_moment, opt.second_moment))


def test_model_hash_changes_with_any_parameter():
    model = Llama(preset("tiny", n_layers=1))
    before = model_hash(model)
    with torch.no_grad():
        model.model.norm.weight[0] += 1e-3
    assert model_hash(model) != before


def test_weights_that_do_not_match_the_config_are_refused(tmp_path):
    save(tmp_path, Llama(preset("tiny", n_layers=2)))
    config = json.loads((tmp_path / "config.json").read_text())
    config["num_hidden_layers"] = 3
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="missing"):
        load_model(tmp_path)


def test_the_weights_file_is_the_model_hash_preimage_and_loads_back(tmp_path):
    import hashlib

    from node.checkpoint import read_weights, write_weights

    a, b = Llama(preset("tiny"), seed=1), Llama(preset("tiny"), seed=2)
    written = write_weights(a, tmp_path / "w.bin")
    assert hashlib.sha256((tmp_path / "w.bin").read_bytes()).digest() == written
    assert written.hex() == model_hash(a)
    read_weights(b, tmp_path / "w.bin")
    assert model_hash(b) == model_hash(a)


def test_weights_of_another_shape_or_truncated_are_refused_and_leave_the_model_untouched(tmp_path):
    import pytest

    from node.checkpoint import read_weights, write_weights

    write_weights(Llama(preset("tiny", dim=64, ffn_dim=160)), tmp_path / "other.bin")
    model = Llama(preset("tiny"))
    before = model_hash(model)
    with pytest.raises(ValueError, match="do not match"):
        read_weights(model, tmp_path / "other.bin")
    write_weights(model, tmp_path / "w.bin")
    (tmp_path / "cut.bin").write_bytes((tmp_path / "w.bin").read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        read_weights(model, tmp_path / "cut.bin")
    assert model_hash(model) == before


# --- files from peers are hostile: every failure is a CheckpointError, and nothing is loaded ---


def tiny_weights(tmp_path):
    model = Llama(preset("tiny", n_layers=1), seed=2)
    write_weights(model, tmp_path / "w.bin")
    return model, (tmp_path / "w.bin").read_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_weights_load_exactly_or_raise_a_checkpoint_error_leaving_the_model(tmp_path, data):
    model, raw = tiny_weights(tmp_path)
    target = Llama(preset("tiny", n_layers=1), seed=3)
    before = model_hash(target)
    at = data.draw(st.integers(0, len(raw)))
    cut = data.draw(st.integers(0, 16))
    junk = data.draw(st.binary(max_size=16))
    (tmp_path / "m.bin").write_bytes(raw[:at] + junk + raw[at + cut :])
    try:
        read_weights(target, tmp_path / "m.bin")
    except CheckpointError:
        assert model_hash(target) == before
    else:
        assert torch.isfinite(torch.cat([p.flatten() for p in target.parameters()])).all()


def test_non_finite_weights_from_a_peer_are_refused(tmp_path):
    model, raw = tiny_weights(tmp_path)
    header_end = raw.index(b"\n") + 1
    (tmp_path / "nan.bin").write_bytes(
        raw[:header_end] + struct.pack("<f", float("nan")) + raw[header_end + 4 :]
    )
    with pytest.raises(CheckpointError, match="non-finite"):
        read_weights(Llama(preset("tiny", n_layers=1)), tmp_path / "nan.bin")


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "model_type",
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "num_key_value_heads",
                "intermediate_size",
                "vocab_size",
                "rope_theta",
                "rms_norm_eps",
                "tie_word_embeddings",
                "max_position_embeddings",
                "rope_scaling",
                "rope_parameters",
                "hidden_act",
                "head_dim",
            ]
        ),
        st.one_of(
            st.integers(-5, 10**12),
            st.floats(allow_nan=True),
            st.text(max_size=5),
            st.none(),
            st.booleans(),
            st.just("llama"),
            st.dictionaries(
                st.sampled_from(
                    [
                        "rope_type",
                        "type",
                        "rope_theta",
                        "factor",
                        "low_freq_factor",
                        "high_freq_factor",
                        "original_max_position_embeddings",
                        "other",
                    ]
                ),
                st.one_of(
                    st.sampled_from(["default", "linear", "llama3", "yarn"]),
                    st.integers(-5, 10**9),
                    st.floats(allow_nan=True),
                    st.none(),
                ),
            ),  # fmt: skip
        ),
    )
)
def test_any_config_json_gives_a_bounded_model_config_or_a_checkpoint_error(raw):
    try:
        cfg = config_from_hf(raw)
    except CheckpointError:
        return
    cfg.check()
    assert cfg.dim <= 1 << 16 and cfg.n_layers <= 512 and cfg.vocab_size <= 1 << 20


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: (d / "model.safetensors").write_bytes(b"\xff" * 64),
        lambda d: (d / "config.json").write_text("[1, 2"),
        lambda d: (d / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 10**9})),
        lambda d: (d / "optimizer.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}"),
    ],
    ids=["garbage safetensors", "broken json", "absurd size", "empty optimizer file"],
)
def test_a_mangled_checkpoint_directory_is_a_checkpoint_error(tmp_path, mangle):
    model, opt = trained_pair()
    save(tmp_path, model, opt)
    mangle(tmp_path)
    with pytest.raises(CheckpointError):
        load_model(tmp_path)
        load_optimizer(tmp_path, DemoOptimizer(model.named_parameters(), opt.config))


LLAMA = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 160}


@pytest.mark.parametrize(
    "extra, named",
    [
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_type = 'yarn'"),
        ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0}}, "rope_type = 'dynamic'"),
        ({"rope_scaling": {"rope_type": "linear"}}, "lacks factor"),
        ({"rope_scaling": {"rope_type": "linear", "factor": 2.0, "beta_fast": 32}}, "beta_fast"),
        ({"rope_parameters": {"full_attention": {"rope_type": "default"}}}, "full_attention"),
        ({"attention_bias": True}, "attention_bias"),
        ({"mlp_bias": True}, "mlp_bias"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"head_dim": 32}, "head_dim"),
    ],
)
def test_what_this_model_does_not_compute_is_refused_naming_the_field(extra, named):
    with pytest.raises(CheckpointError, match=re.escape(named)):
        config_from_hf(LLAMA | extra)


def test_rope_theta_is_read_from_transformers_5_rope_parameters_and_from_transformers_4_beside_them():
    assert (
        config_from_hf(LLAMA | {"rope_parameters": {"rope_type": "default", "rope_theta": 5e5}}).rope_theta
        == 5e5
    )
    assert config_from_hf(LLAMA | {"rope_theta": 5e5}).rope_theta == 5e5
    legacy = config_from_hf(LLAMA | {"rope_theta": 5e5, "rope_scaling": {"type": "linear", "factor": 2}})
    assert (legacy.rope_theta, legacy.rope_type, legacy.rope_factor) == (5e5, "linear", 2.0)
