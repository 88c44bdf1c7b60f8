import json

import pytest
import torch

from node.checkpoint import load_model, load_optimizer, model_hash, save
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
    write_weights(a, tmp_path / "w.bin")
    assert hashlib.sha256((tmp_path / "w.bin").read_bytes()).hexdigest() == model_hash(a)
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
