"""Multiple-choice evaluation tasks as token ids: the file a run pins by sha256 in `eval.tasks`
and every node scores by log-likelihood (node/train.py `Trainer.choice_accuracy`).

    {"tokenizer_sha256": "...", "tasks": [{"prompt": [ids], "choices": [[ids], ...], "answer": 1}]}

`eranos prepare-eval` writes it from a JSONL of prompt/choices/answer with the run's tokenizer,
so nodes never tokenize. A node fetches it from peers: `loads` checks everything (sizes, ids
within the vocabulary, lengths within the model's context, the answer among the choices) and
raises EvalTasksError naming the first problem.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

MAX_BYTES = 64 << 20
MAX_TASKS = 100_000
MAX_CHOICES = 16


class EvalTasksError(ValueError):
    """An evaluation tasks file that cannot be used; the message says why."""


@dataclass(frozen=True)
class Task:
    prompt: tuple[int, ...]
    choices: tuple[tuple[int, ...], ...]
    answer: int  # index into choices


def dumps(tasks: list[Task], tokenizer_sha256: str) -> bytes:
    rows = [
        {"prompt": list(t.prompt), "choices": [list(c) for c in t.choices], "answer": t.answer} for t in tasks
    ]
    body = {"tokenizer_sha256": tokenizer_sha256, "tasks": rows}
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def loads(data: bytes, vocab_size: int, max_seq_len: int) -> list[Task]:
    if len(data) > MAX_BYTES:
        raise EvalTasksError(f"{len(data)} bytes, more than {MAX_BYTES}")
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EvalTasksError(f"not JSON: {exc}") from None
    raw = body.get("tasks") if isinstance(body, dict) else None
    if not isinstance(raw, list) or not 0 < len(raw) <= MAX_TASKS:
        raise EvalTasksError(f"expected 1 to {MAX_TASKS} tasks under 'tasks'")
    return [_task(i, t, vocab_size, max_seq_len) for i, t in enumerate(raw)]


def _task(i: int, raw: object, vocab_size: int, max_seq_len: int) -> Task:
    if not isinstance(raw, dict):
        raise EvalTasksError(f"task {i}: not an object")
    prompt, choices, answer = raw.get("prompt"), raw.get("choices"), raw.get("answer")
    if not isinstance(choices, list) or not 2 <= len(choices) <= MAX_CHOICES:
        raise EvalTasksError(f"task {i}: expected 2 to {MAX_CHOICES} choices")
    if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
        raise EvalTasksError(f"task {i}: answer must index its choices, got {answer!r}")
    ids = [_ids(i, "prompt", prompt, vocab_size)] + [_ids(i, "choice", c, vocab_size) for c in choices]
    if not ids[0] or not all(ids[1:]):
        raise EvalTasksError(f"task {i}: an empty prompt or choice")
    if len(ids[0]) + max(len(c) for c in ids[1:]) - 1 > max_seq_len:
        raise EvalTasksError(f"task {i}: prompt and choice exceed the model's {max_seq_len} tokens")
    return Task(ids[0], tuple(ids[1:]), answer)


def _ids(i: int, what: str, raw: object, vocab_size: int) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in raw):
        raise EvalTasksError(f"task {i}: {what} must be a list of token ids")
    if any(not 0 <= t < vocab_size for t in raw):
        raise EvalTasksError(f"task {i}: {what} has token ids outside the vocabulary of {vocab_size}")
    return tuple(raw)
