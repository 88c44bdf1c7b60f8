"""`eranos prepare-eval`: multiple-choice tasks in (JSONL of prompt, choices, answer), the token
ids every node scores out (protocol/eval_tasks.py), and the sha256 the run config pins.

    eranos prepare-eval --tokenizer tokenizer.json -o tasks.eval.json tasks.jsonl
    eranos prepare-eval -o tasks.eval.json tasks.jsonl      # the byte tokenizer (the presets')

Each line: {"prompt": "The capital of France is", "choices": [" Paris", " Rome"], "answer": 0}.
Then in the run config: [eval] tasks = "tasks.eval.json", tasks_sha256 = "<printed>".
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from node.shard_store import hex_sha256
from node.tokenizer import load_tokenizer
from protocol.console import HelpFormatter, Parser
from protocol.eval_tasks import Task, dumps


def tasks_from_jsonl(path: Path, tokenizer) -> list[Task]:
    tasks = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            prompt, choices, answer = row["prompt"], row["choices"], int(row["answer"])
            encoded = [tuple(int(t) for t in tokenizer.encode(text)) for text in [prompt, *choices]]
        except (ValueError, KeyError, TypeError) as exc:
            why = f"{path}:{number}: expected prompt, choices, answer ({exc})"
            raise SystemExit(f"eranos prepare-eval: {why}") from None
        tasks.append(Task(encoded[0], tuple(encoded[1:]), answer))
    return tasks


def main(argv: list[str] | None = None, prog: str = "eranos prepare-eval") -> None:
    p = Parser(prog=prog, description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("input", type=Path, help="JSONL: prompt, choices, answer per line")
    p.add_argument("-o", "--out", required=True, type=Path, help="the tasks file to write")
    p.add_argument("--tokenizer", type=Path, help="a Hugging Face tokenizer.json (default: bytes)")
    args = p.parse_args(argv)
    for path in (args.input, args.tokenizer):
        if path is not None and not path.is_file():
            p.error(f"{path} does not exist")
    tokenizer = load_tokenizer(args.tokenizer)
    tokenizer_sha = hex_sha256(args.tokenizer) if args.tokenizer else "bytes"
    tasks = tasks_from_jsonl(args.input, tokenizer)
    if not tasks:
        p.error(f"{args.input} holds no tasks")
    data = dumps(tasks, tokenizer_sha)
    args.out.write_bytes(data)
    print(f"{len(tasks)} tasks in {args.out}")
    print(f'[eval] tasks = "{args.out}"  tasks_sha256 = "{hashlib.sha256(data).hexdigest()}"')


if __name__ == "__main__":
    main()
