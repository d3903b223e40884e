import urllib.request

import pytest
import torch

from gptlab.data.corpora import CORPORA, corpus_path
from gptlab.data.datamodule import TextDataModule
from gptlab.data.tokenizers import CharTokenizer, GPT2Tokenizer, tokenizer_from_spec
from gptlab.data.windows import TokenWindows, count_windows
from gptlab.errors import ConfigError, DataError


def test_gpt2_ids_for_a_known_sentence():
    tok = GPT2Tokenizer()
    # Ids from OpenAI's GPT-2 encoder (the same as tiktoken.get_encoding("gpt2") gives online).
    assert tok.encode("Hello, do you like tea? <|endoftext|> In the sunlit terraces") == [
        15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114,
    ]
    assert tok.vocab_size == 50257 and tok.eos_id == 50256


def test_gpt2_round_trip(verdict_text):
    tok = GPT2Tokenizer()
    ids = tok.encode_corpus(verdict_text)
    assert len(ids) == 5145
    assert tok.decode(ids) == verdict_text


def test_char_tokenizer_round_trip_and_spec(shakespeare_text):
    tok = CharTokenizer.from_text(shakespeare_text)
    assert tok.vocab_size == 65
    sample = shakespeare_text[:500]
    assert tok.decode(tok.encode(sample)) == sample
    rebuilt = tokenizer_from_spec(tok.spec())
    assert rebuilt.encode(sample) == tok.encode(sample)
    with pytest.raises(ConfigError, match="not in this model's 65-character vocabulary"):
        tok.encode("café")


def make_datamodule(data_dir, **overrides) -> TextDataModule:
    settings = dict(corpus="the-verdict", data_dir=str(data_dir), batch_size=2, max_length=256, stride=256)
    dm = TextDataModule(**{**settings, **overrides})
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_verdict_window_and_split_arithmetic(data_dir):
    dm = make_datamodule(data_dir)
    # 5,145 tokens in all; the 90/10 cut falls inside a word, which then tokenises as two pieces.
    assert (len(dm.train_tokens), len(dm.val_tokens)) == (4612, 534)
    assert len(dm.train_dataloader()) == 9
    assert len(dm.val_dataloader()) == 1
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == y.shape == (2, 256)
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one token


def test_shakespeare_splits(data_dir):
    bpe = make_datamodule(data_dir, corpus="tinyshakespeare", tokenizer="gpt2")
    assert (len(bpe.train_tokens), len(bpe.val_tokens)) == (301_966, 36_059)
    char = make_datamodule(data_dir, corpus="tinyshakespeare", tokenizer="char")
    assert (len(char.train_tokens), len(char.val_tokens)) == (1_003_854, 111_540)
    assert char.vocab_size == 65


def test_windows_are_views_of_one_stream():
    tokens = torch.arange(20)
    windows = TokenWindows(tokens, max_length=4, stride=3)
    assert len(windows) == count_windows(20, 4, 3) == 6  # starts 0, 3, ..., 15; 15 + 4 + 1 = 20 fits
    x, y = windows[5]
    assert x.tolist() == [15, 16, 17, 18] and y.tolist() == [16, 17, 18, 19]
    assert x.untyped_storage().data_ptr() == tokens.untyped_storage().data_ptr()


def test_last_validation_batch_is_kept_and_training_drops_partial_batches(data_dir):
    dm = make_datamodule(data_dir, max_length=64, stride=64, val_stride=64, batch_size=3)
    assert len(dm.val_set) == 8  # 534 validation tokens: windows start at 0, 64, ..., 448
    assert [len(x) for x, _ in dm.val_dataloader()] == [3, 3, 2]
    assert all(len(x) == 3 for x, _ in dm.train_dataloader())


def test_train_batches_are_shuffled_and_val_batches_ordered(data_dir):
    dm = make_datamodule(data_dir, max_length=16, stride=16, batch_size=4)
    torch.manual_seed(0)
    first = next(iter(dm.train_dataloader()))[0]
    assert not torch.equal(first, torch.stack([dm.train_set[i][0] for i in range(4)]))
    assert torch.equal(next(iter(dm.val_dataloader()))[0], torch.stack([dm.val_set[i][0] for i in range(4)]))


def test_split_smaller_than_one_window_names_split_size_and_knob(data_dir):
    with pytest.raises(DataError, match=r"validation split has 534 tokens.*lower data.max_length"):
        make_datamodule(data_dir, max_length=600, stride=600)
    with pytest.raises(DataError, match=r"train split has \d+ tokens.*raise data.train_ratio"):
        make_datamodule(data_dir, train_ratio=0.02, max_length=128)


def test_too_few_windows_for_one_batch(data_dir):
    with pytest.raises(ConfigError, match="fewer than one batch of data.batch_size=32"):
        make_datamodule(data_dir, batch_size=32)


@pytest.mark.parametrize("bad, message", [({"train_ratio": 1.0}, "train_ratio"), ({"stride": -1}, "stride")])
def test_bad_data_settings(data_dir, bad, message):
    with pytest.raises(ConfigError, match=message):
        make_datamodule(data_dir, **bad)


def test_corrupted_and_empty_corpus_files(tmp_path):
    (tmp_path / "the-verdict.txt").write_text("not the verdict")
    with pytest.raises(DataError, match="does not match its sha256"):
        corpus_path("the-verdict", tmp_path)
    (tmp_path / "the-verdict.txt").write_text("")
    with pytest.raises(DataError, match="is empty"):
        corpus_path("the-verdict", tmp_path)


def test_missing_corpus_offline_says_where_to_put_it(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match=f"put the file there.*{CORPORA['the-verdict'].url}"):
        corpus_path("the-verdict", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_missing_corpus_is_fetched_verified_and_written(tmp_path, monkeypatch, data_dir):
    payload = (data_dir / "the-verdict.txt").read_bytes()

    class Response:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return payload

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Response())
    path = corpus_path("the-verdict", tmp_path / "fresh")
    assert path.read_bytes() == payload
    assert [p.name for p in path.parent.iterdir()] == ["the-verdict.txt"]  # no temporary file left


def test_unknown_corpus(tmp_path):
    with pytest.raises(ConfigError, match="known corpora: tinyshakespeare, the-verdict"):
        corpus_path("wikitext", tmp_path)
