"""`eranos prepare-data` and the shards it writes: what goes in, what the manifest pins, and the
clear errors a node gets at start for a shard that is missing, altered or out of vocabulary."""

import json

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from eranos.prepare_data import main as prepare
from node.shard_store import ShardError, ShardStore
from node.sharded_data import ShardedDataset
from protocol.manifest import ManifestError, files, load, loads

WORDS = ["<unk>", "</s>", "the", "cat", "sat", "on", "mat", "user", "says", "hi", "bot", "answers", "hello"]


@pytest.fixture
def tokenizer(tmp_path):
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    return path


def test_text_files_become_shards_whose_tokens_follow_the_documents(tmp_path, tokenizer, capsys):
    (tmp_path / "a.txt").write_text("the cat sat")
    (tmp_path / "b.txt").write_text("on the mat")
    prepare(["--tokenizer", str(tokenizer), "-o", str(tmp_path / "out"), "--shard-tokens", "5",
             str(tmp_path / "a.txt"), str(tmp_path / "b.txt")])  # fmt: skip
    manifest = load(tmp_path / "out" / "manifest.json")
    assert [s.tokens for s in manifest.shards] == [5, 3] and manifest.dtype == "uint16"
    store = ShardStore(tmp_path / "out", manifest, vocab_size=len(WORDS))
    assert store.read(0, 8).tolist() == [2, 3, 4, 1, 5, 2, 6, 1] and not store.masked
    assert f'manifest_sha256 = "{manifest.digest()}"' in capsys.readouterr().out
    assert (tmp_path / "out" / "tokenizer.json").read_bytes() == tokenizer.read_bytes()
    assert tmp_path / "out" / "tokenizer.json" in files(tmp_path / "out" / "manifest.json")


def test_chat_pairs_carry_a_loss_mask_that_leaves_the_prompt_out(tmp_path, tokenizer):
    rows = [{"prompt": "user says hi", "completion": "bot answers hello"}]
    (tmp_path / "chat.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    prepare(["--tokenizer", str(tokenizer), "-o", str(tmp_path / "out"), "--prompt-field", "prompt",
             "--completion-field", "completion", str(tmp_path / "chat.jsonl")])  # fmt: skip
    manifest = load(tmp_path / "out" / "manifest.json")
    store = ShardStore(tmp_path / "out", manifest, vocab_size=len(WORDS))
    assert store.read(0, 7).tolist() == [7, 8, 9, 10, 11, 12, 1]
    assert store.read(0, 7, mask=True).tolist() == [0, 0, 0, 1, 1, 1, 1] and manifest.masked


def test_masked_targets_are_the_only_ones_in_a_batchs_loss(tmp_path, tokenizer):
    rows = [{"prompt": "user says hi", "completion": "bot answers hello"}] * 8
    (tmp_path / "chat.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    prepare(["--tokenizer", str(tokenizer), "-o", str(tmp_path / "out"), "--prompt-field", "prompt",
             "--completion-field", "completion", str(tmp_path / "chat.jsonl")])  # fmt: skip
    store = ShardStore(tmp_path / "out", load(tmp_path / "out" / "manifest.json"), len(WORDS))
    data = ShardedDataset(store, seq_len=6, batch_seqs=2, val_fraction=0.15)
    seqs, counted = data.batch(0), data.batch_targets(0)
    assert counted.shape == (2, 6)
    prompt_targets = {7, 8, 9}
    assert all((t in prompt_targets) != c for t, c in zip(seqs[:, 1:].ravel(), counted.ravel()))


def shards(tmp_path, tokenizer):
    (tmp_path / "a.txt").write_text("the cat sat on the mat")
    prepare(["--tokenizer", str(tokenizer), "-o", str(tmp_path / "out"), str(tmp_path / "a.txt")])
    return tmp_path / "out", load(tmp_path / "out" / "manifest.json")


def test_a_missing_shard_is_named(tmp_path, tokenizer):
    out, manifest = shards(tmp_path, tokenizer)
    (out / manifest.shards[0].name).unlink()
    with pytest.raises(ShardError, match="shard-00000.bin is missing"):
        ShardStore(out, manifest, len(WORDS)).check_all()


def test_an_altered_shard_is_caught_by_its_hash(tmp_path, tokenizer):
    out, manifest = shards(tmp_path, tokenizer)
    path = out / manifest.shards[0].name
    path.write_bytes(path.read_bytes()[:-2] + b"\x00\x00")
    with pytest.raises(ShardError, match="does not match the manifest's sha256"):
        ShardStore(out, manifest, len(WORDS)).check_all()


def test_a_vocabulary_larger_than_the_models_is_refused_at_start(tmp_path, tokenizer):
    out, manifest = shards(tmp_path, tokenizer)
    with pytest.raises(ShardError, match="vocabulary of 13, the model has 5"):
        ShardStore(out, manifest, vocab_size=5)


def test_a_token_beyond_the_models_vocabulary_is_named_with_its_shard(tmp_path, tokenizer):
    out, manifest = shards(tmp_path, tokenizer)
    np.array([2, 3, 40], dtype="<u2").tofile(out / "shard-00000.bin")
    import hashlib

    from protocol.manifest import Manifest, Shard

    sha = hashlib.sha256((out / "shard-00000.bin").read_bytes()).hexdigest()
    forged = Manifest("uint16", 13, manifest.tokenizer_sha256, (Shard("shard-00000.bin", 3, sha),))
    with pytest.raises(ShardError, match="token id 40, beyond the model's vocabulary of 13"):
        ShardStore(out, forged, vocab_size=13).check_all()


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda d: d["shards"][0].update(name="../etc/passwd.bin"), "plain file name"),
        (lambda d: d.update(total_tokens=d["total_tokens"] + 1), "not the shards' sum"),
        (lambda d: d.update(dtype="float32"), "dtype must be one of"),
        (lambda d: d["shards"][0].update(sha256="xyz"), "64 lowercase hex"),
        (lambda d: d.update(shards=[]), "between 1 and"),
        (lambda d: d["shards"][0].update(tokens=-1), "tokens must be positive"),
    ],
)
def test_a_malformed_manifest_is_refused_naming_the_field(tmp_path, tokenizer, edit, says):
    out, manifest = shards(tmp_path, tokenizer)
    doc = json.loads(manifest.dumps())
    edit(doc)
    with pytest.raises(ManifestError, match=says):
        loads(json.dumps(doc))


def test_a_bad_jsonl_line_is_one_line_naming_file_and_line(tmp_path, tokenizer):
    (tmp_path / "bad.jsonl").write_text('{"text": "the cat"}\n{oops\n')
    with pytest.raises(SystemExit, match=r"bad.jsonl:2: not JSON"):
        prepare(["--tokenizer", str(tokenizer), "-o", str(tmp_path / "out"), str(tmp_path / "bad.jsonl")])


def test_a_tokenizer_without_an_end_token_says_to_pass_one(tmp_path):
    tok = Tokenizer(models.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>"))
    tok.save(str(tmp_path / "t.json"))
    (tmp_path / "a.txt").write_text("a")
    with pytest.raises(SystemExit, match="pass --eos TOKEN"):
        prepare(
            ["--tokenizer", str(tmp_path / "t.json"), "-o", str(tmp_path / "out"), str(tmp_path / "a.txt")]
        )


def test_a_node_refuses_shards_whose_manifest_is_not_the_one_the_run_pins(tmp_path, tokenizer):
    from dataclasses import replace

    from node.run_data import build_data
    from protocol.run_config import RunConfig

    out, manifest = shards(tmp_path, tokenizer)
    base = RunConfig()
    data = replace(
        base.data, manifest=str(out / "manifest.json"), manifest_sha256="0" * 64, seq_len=2, batch_size=1
    )
    with pytest.raises(ManifestError, match="is not the run's data"):
        build_data(replace(base, data=data))
    pinned = replace(data, manifest_sha256=manifest.digest())
    assert build_data(replace(base, data=pinned)).store.read(0, 3).tolist() == [2, 3, 4]  # the cat sat
