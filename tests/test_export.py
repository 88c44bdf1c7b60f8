"""A node's model as a Hugging Face checkpoint: transformers opens it and generates."""

import json

import pytest
import torch

from node.checkpoint import model_hash, write_weights
from node.export import main as export_main
from node.model import Llama
from protocol.model_config import preset
from protocol.run_config import RunConfig, dumps


def node_workdir(tmp_path):
    workdir = tmp_path / "eranos-node-abc"
    workdir.mkdir()
    model = Llama(preset("tiny"), seed=3)
    write_weights(model, workdir / "weights.bin")
    (workdir / "run.toml").write_text(dumps(RunConfig()))
    (workdir / "rounds.jsonl").write_text("")
    return workdir, model


def test_an_exported_node_model_loads_in_transformers_and_generates(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    workdir, model = node_workdir(tmp_path)
    export_main([str(workdir), "-o", str(tmp_path / "hf")])
    info = json.loads((tmp_path / "hf" / "export.json").read_text())
    assert info == {"round": -1, "model_hash": model_hash(model)}
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf", torch_dtype=torch.float32).eval()
    prompt = torch.tensor([[72, 101, 108]])
    out = hf.generate(prompt, max_new_tokens=5, do_sample=False)
    assert out.shape == (1, 8)
    with torch.no_grad():
        ours, _ = model(prompt, prompt)
    assert torch.allclose(hf(prompt).logits, ours, atol=1e-4)
    assert "the model after round -1" in capsys.readouterr().out


def test_exporting_a_directory_that_is_no_node_workdir_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match="is missing: is .* a node's work directory"):
        export_main([str(tmp_path), "-o", str(tmp_path / "hf")])
