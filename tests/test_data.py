import numpy as np
import pytest

from node.data import TokenDataset, default_corpus, text_path_corpus, token_file_corpus
from node.tokenizer import ByteTokenizer
from protocol.assignment import assign_batches, round_batch_ids


@pytest.fixture(scope="module")
def stdlib():
    return default_corpus(ByteTokenizer())


def test_default_corpus_is_the_stdlib_with_a_stable_hash(stdlib):
    again = default_corpus(ByteTokenizer())
    assert len(stdlib.tokens) > 5_000_000
    assert stdlib.sha256 == again.sha256
    assert np.array_equal(stdlib.tokens[:1000], again.tokens[:1000])


def test_batch_ids_map_to_fixed_sequences(stdlib):
    a, b = TokenDataset(stdlib, 64, 8), TokenDataset(stdlib, 64, 8)
    assert a.batch(12).shape == (8, 65)
    assert np.array_equal(a.batch(12), b.batch(12))
    assert not np.array_equal(a.batch(12), a.batch(13))


def test_sequences_are_consecutive_windows_of_the_stream():
    from node.data import Corpus

    data = TokenDataset(
        Corpus(np.arange(1000, dtype=np.uint16), "x", "x"), seq_len=10, batch_seqs=2, val_fraction=0.1
    )
    seqs = data.batch(0)
    for s in seqs:
        assert np.array_equal(s, np.arange(s[0], s[0] + 11)) and s[0] % 10 == 0
    assert data.val[0] == 900 and len(data.train) == 900


def test_later_epochs_reshuffle(stdlib):
    data = TokenDataset(stdlib, 64, 8)
    assert not np.array_equal(data.batch(0), data.batch(data.batches_per_epoch))


def test_validation_split_is_disjoint_from_training(stdlib):
    data = TokenDataset(stdlib, 64, 8)
    assert len(data.train) + len(data.val) == len(stdlib.tokens)
    assert data.val_batches(4).shape == (4, 65)


def test_token_files_are_memory_mapped(tmp_path):
    path = tmp_path / "tokens.bin"
    np.arange(500, dtype="<u4").tofile(path)
    corpus = token_file_corpus(path, "uint32")
    assert isinstance(corpus.tokens, np.memmap) and corpus.tokens[499] == 499


def test_text_directories_are_read_in_sorted_order(tmp_path):
    (tmp_path / "b.txt").write_text("bb")
    (tmp_path / "a.txt").write_text("a")
    assert ByteTokenizer().decode(text_path_corpus(tmp_path, ByteTokenizer()).tokens) == "abb"


def test_every_batch_goes_to_exactly_one_member():
    shares = assign_batches(5, ["c", "a", "b"], round_batch_ids(2, 10))
    assert sorted(b for s in shares.values() for b in s) == list(range(20, 30))
    assert [len(shares[m]) for m in "abc"] == [4, 3, 3]


def test_assignment_is_a_function_of_seed_and_members():
    assert assign_batches(1, ["a", "b"], range(8)) == assign_batches(1, ["b", "a"], range(8))
    assert assign_batches(1, ["a", "b"], range(8)) != assign_batches(2, ["a", "b"], range(8))


def test_byte_tokenizer_round_trips_text():
    tok = ByteTokenizer()
    assert tok.decode(tok.encode("héllo\n")) == "héllo\n"


def test_a_local_hugging_face_tokenizer_json_is_used(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "</s>"])
    tok.train_from_iterator(["def main():\n    return 42\n"] * 50, trainer)
    tok.save(str(tmp_path / "tokenizer.json"))
    from node.tokenizer import load_tokenizer

    loaded = load_tokenizer(tmp_path)
    ids = loaded.encode("def main():")
    assert loaded.eos_id == tok.token_to_id("</s>")
    assert len(ids) < len("def main():") and loaded.decode(ids) == "def main():"
