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
    assert json.loads((tmp_path / "config.json").read_text())["agora"]["model_hash"] == digest


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
