"""Multiple-choice evaluation: the tasks file a run pins (hostile until checked), the command
that writes it, and the accuracy every node reports."""

import hashlib
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from node.data import TokenDataset, default_corpus
from node.model import Llama, preset
from node.run_data import eval_tasks
from node.tokenizer import ByteTokenizer
from node.train import Trainer, score
from protocol.eval_tasks import EvalTasksError, Task, dumps, loads
from protocol.run_config import RunConfig, load

ROOT = Path(__file__).resolve().parent.parent
GOOD = [Task((1, 2, 3), ((4,), (5, 6)), 1), Task((7,), ((8,), (9,), (10,)), 0)]


def test_tasks_read_back_as_written():
    assert loads(dumps(GOOD, "bytes"), vocab_size=259, max_seq_len=128) == GOOD


@pytest.mark.parametrize(
    ("task", "why"),
    [
        ({"prompt": [1], "choices": [[2]], "answer": 0}, "2 to 16 choices"),
        ({"prompt": [1], "choices": [[2], [3]], "answer": 2}, "answer must index"),
        ({"prompt": [1], "choices": [[2], [3]], "answer": True}, "answer must index"),
        ({"prompt": [1], "choices": [[2], [300]], "answer": 0}, "outside the vocabulary of 259"),
        ({"prompt": [-1], "choices": [[2], [3]], "answer": 0}, "outside the vocabulary"),
        ({"prompt": [], "choices": [[2], [3]], "answer": 0}, "empty prompt or choice"),
        ({"prompt": "text", "choices": [[2], [3]], "answer": 0}, "list of token ids"),
        ({"prompt": [1] * 120, "choices": [[2] * 10, [3]], "answer": 0}, "exceed the model's 128 tokens"),
    ],
)
def test_a_bad_task_is_refused_naming_its_index_and_problem(task, why):
    data = json.dumps({"tasks": [{"prompt": [1], "choices": [[2], [3]], "answer": 0}, task]}).encode()
    with pytest.raises(EvalTasksError, match=f"task 1: .*{why}"):
        loads(data, vocab_size=259, max_seq_len=128)


@pytest.mark.parametrize("data", [b"\xff\xfe", b"[]", b'{"tasks": []}', b"{" * 10])
def test_a_file_that_is_not_a_tasks_file_is_refused(data):
    with pytest.raises(EvalTasksError):
        loads(data, vocab_size=259, max_seq_len=128)


def test_accuracy_counts_the_tasks_whose_answer_the_model_finds_likeliest():
    model = Llama(preset("tiny"), seed=1)
    trainer = Trainer(model, TokenDataset(default_corpus(ByteTokenizer()), 32, 2), 2, torch.device("cpu"))
    prompt, choices = (72, 101), ((108,), (120, 121), (33,))
    scores = [score(model, (np.array([*prompt, *c]), len(prompt)), torch.device("cpu")) for c in choices]
    best = max(range(3), key=lambda i: scores[i])
    ids = torch.tensor([[*prompt, *choices[best]]])
    logprobs = torch.log_softmax(model(ids[:, :-1])[0][0].detach(), dim=-1)
    by_hand = sum(float(logprobs[len(prompt) - 1 + j, t]) for j, t in enumerate(choices[best]))
    assert scores[best] == pytest.approx(by_hand, abs=1e-5)
    worst = min(range(3), key=lambda i: scores[i])
    tasks = [Task(prompt, choices, best), Task(prompt, choices, worst)]
    assert trainer.choice_accuracy(tasks) == 0.5


def test_prepare_eval_writes_the_file_a_run_pins_and_the_node_checks(tmp_path):
    source = tmp_path / "tasks.jsonl"
    rows = [
        {"prompt": "import ", "choices": ["os", "zz"], "answer": 0},
        {"prompt": "def", "choices": [" f", "!"], "answer": 0},
    ]
    source.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "tasks.eval.json"
    done = subprocess.run(
        [sys.executable, "-m", "eranos", "prepare-eval", "-o", str(out), str(source)],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert f'tasks_sha256 = "{digest}"' in done.stdout
    base = load(ROOT / "configs" / "sim.toml")
    config = replace(base, eval=replace(base.eval, tasks=str(out), tasks_sha256=digest))
    tasks = eval_tasks(config)
    assert [t.prompt for t in tasks] == [tuple(b"import "), tuple(b"def")] and tasks[0].choices[0] == tuple(
        b"os"
    )
    with pytest.raises(EvalTasksError, match="not the run's tasks"):
        eval_tasks(replace(config, eval=replace(config.eval, tasks_sha256="0" * 64)))


def test_a_run_config_naming_tasks_must_pin_their_hash():
    from protocol.run_config import ConfigError
    from protocol.run_config import loads as config_loads

    with pytest.raises(ConfigError, match="eval.tasks_sha256"):
        config_loads('[eval]\ntasks = "t.json"\n')
    assert isinstance(
        config_loads('[eval]\ntasks = "t.json"\ntasks_sha256 = "' + "a" * 64 + '"\n'), RunConfig
    )
