"""Hugging Face tokenizers (data.tokenizer=<folder or Hub name>): the same ids as transformers' own reading of
the folder, GPT-2's files read this way give tiktoken's ids, a changed tokenizer is noticed, and a model
whose tokenizer is not GPT-2's trains, generates and exports end to end (our GPT, and model=hf_causal_lm
with its own tokenizer; a data tokenizer that disagrees with the model's is refused)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_runner import TINY_RUN, assert_ok, last_value, read_metrics, run_script, run_train
from corpus_files import write_speech_files

from gptlab.core.errors import ConfigError
from gptlab.data.tokenizers import HFTokenizer, gpt2_encoding, tokenizer_from_setting, tokenizer_from_spec
from gptlab.hub.export import hf_tokenizer_from_spec

VOCAB = 600


@pytest.fixture(scope="module")
def bpe_folder(tmp_path_factory, shakespeare_text) -> Path:
    """A byte-level BPE of 600 ids trained on Tiny Shakespeare with the tokenizers library, saved as
    transformers saves a tokenizer (tokenizer.json + tokenizer_config.json, eos <|endoftext|>)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator([shakespeare_text], trainer)
    folder = tmp_path_factory.mktemp("bpe600")
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>").save_pretrained(folder)
    return folder


def test_ids_are_the_ones_transformers_reads_from_the_folder(bpe_folder, shakespeare_text):
    from transformers import AutoTokenizer

    ours = tokenizer_from_setting(str(bpe_folder))
    theirs = AutoTokenizer.from_pretrained(str(bpe_folder))
    text = shakespeare_text[:20_000]
    assert ours.encode(text) == theirs.encode(text, add_special_tokens=False)
    assert ours.vocab_size == len(theirs) == VOCAB
    assert ours.eos_id == theirs.eos_token_id
    assert ours.decode(ours.encode(text)) == text
    # A literal "<|endoftext|>" in a corpus is text; in a prompt it is the end-of-text token.
    assert ours.eos_id not in ours.encode_corpus("a <|endoftext|> b")
    assert ours.eos_id in ours.encode("a <|endoftext|> b")


def test_gpt2s_files_read_as_a_hugging_face_tokenizer_give_tiktokens_ids(tmp_path, shakespeare_text):
    hf_tokenizer_from_spec({"kind": "gpt2"}).save_pretrained(tmp_path / "gpt2")
    ours = tokenizer_from_setting(str(tmp_path / "gpt2"))
    assert ours.encode_corpus(shakespeare_text) == gpt2_encoding().encode_ordinary(shakespeare_text)
    assert ours.encode_corpus_array(shakespeare_text).tolist() == ours.encode_corpus(shakespeare_text)
    assert (ours.vocab_size, ours.eos_id) == (50257, 50256)


def test_the_spec_names_the_folder_and_notices_a_changed_tokenizer(bpe_folder, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (copy / name).write_bytes((bpe_folder / name).read_bytes())
    spec = tokenizer_from_setting(str(copy)).spec()
    assert spec["kind"] == "hf" and spec["name"] == str(copy.resolve())
    assert tokenizer_from_spec(json.loads(json.dumps(spec))).encode("ROMEO:") == HFTokenizer(str(copy)).encode("ROMEO:")

    changed = json.loads((copy / "tokenizer.json").read_text())
    changed["added_tokens"][0]["content"] = "<|end|>"
    (copy / "tokenizer.json").write_text(json.dumps(changed))
    with pytest.raises(ConfigError, match="has changed since these ids were made"):
        tokenizer_from_spec(spec)


def test_a_hub_name_is_read_from_the_hub_cache_offline(bpe_folder, tmp_path, monkeypatch):
    from huggingface_hub import constants

    repo = tmp_path / "models--someone--bpe600"
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (snapshot / name).write_bytes((bpe_folder / name).read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    tokenizer = tokenizer_from_setting("someone/bpe600")
    assert tokenizer.spec()["name"] == "someone/bpe600" and tokenizer.vocab_size == VOCAB
    assert tokenizer.encode("ROMEO:") == HFTokenizer(str(bpe_folder)).encode("ROMEO:")
    with pytest.raises(ConfigError, match="not in the Hub's cache while the Hub cannot be reached"):
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        tokenizer_from_setting("someone/other")


def test_a_name_that_is_no_tokenizer_gets_one_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="the folder holds no tokenizer transformers can read"):
        tokenizer_from_setting(str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="neither gpt2, char, a folder, nor a Hub name"):
        tokenizer_from_setting("no/such/tokenizer")


@pytest.mark.e2e
def test_our_gpt_trains_generates_and_exports_with_a_hugging_face_tokenizer(tmp_path, bpe_folder, shakespeare_text):
    write_speech_files(shakespeare_text[:200_000], tmp_path / "plays", files=6)
    run = tmp_path / "run"
    trained = run_train(
        run, "data=text", f"data.path={tmp_path}/plays", f"data.tokenizer={bpe_folder}", "model=gpt_tiny",
        *TINY_RUN, "logger=csv",
    )
    assert_ok(trained)
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    assert hparams["model"]["vocab_size"] == VOCAB and hparams["tokenizer"]["kind"] == "hf"
    assert float(last_value(read_metrics(run), "val/loss")) < 7  # about ln(600) = 6.4 at the start

    generated = run_script("generate.py", f"ckpt_path={run}", "prompt=ROMEO:", "max_new_tokens=8", "seed=1")
    assert_ok(generated)
    assert "ROMEO:" in generated.stdout

    exported = run_script("export.py", f"ckpt_path={run}", f"out_dir={tmp_path}/export")
    assert_ok(exported)
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(str(tmp_path / "export")).encode("ROMEO:") == HFTokenizer(str(bpe_folder)).encode("ROMEO:")


@pytest.mark.e2e
def test_hf_causal_lm_trains_on_data_in_its_own_tokenizer_and_refuses_another(tmp_path, bpe_folder):
    from transformers import GPT2Config, GPT2LMHeadModel

    model_folder = tmp_path / "tiny-lm"
    config = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(model_folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (model_folder / name).write_bytes((bpe_folder / name).read_bytes())

    common = ["model=hf_causal_lm", f"model.pretrained={model_folder}", "data=shakespeare", *TINY_RUN, "logger=csv"]
    trained = run_train(tmp_path / "run", *common, f"data.tokenizer={model_folder}")
    assert_ok(trained)
    assert float(last_value(read_metrics(tmp_path / "run"), "val/loss")) < 7

    refused = run_train(tmp_path / "refused", *common)  # the data in GPT-2's tokenizer
    assert refused.returncode == 2
    assert f"tokenise the data with the model's own (data.tokenizer={model_folder})" in refused.stderr


def _prefixing_tokenizer(folder: Path, shakespeare_text: str, style: str) -> Path:
    """A BPE of 600 ids trained on Tiny Shakespeare that adds a prefix at the start of a text: Llama 2's
    converted sentencepiece ("▁" by a Prepend normalizer), a Metaspace pre-tokenizer (prepend_scheme first),
    or a byte-level one with add_prefix_space (RoBERTa's)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    alphabet = sorted(set(shakespeare_text) | {"▁"})
    if style == "prepend":
        backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Strip(" ", 1, 0)])
    elif style == "metaspace":
        backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    else:
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        backend.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<unk>", "</s>"], initial_alphabet=alphabet, show_progress=False)
    backend.train_from_iterator(shakespeare_text.split("\n"), trainer)
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", unk_token="<unk>").save_pretrained(folder)
    return folder


@pytest.mark.parametrize("style", ["prepend", "metaspace", "byte-level"])
def test_a_document_read_in_pieces_gets_transformers_ids_from_a_prefixing_tokenizer(tmp_path, monkeypatch, shakespeare_text, style):
    # Each 4 MB piece of a document was encoded as a text of its own: one "▁" (or space) more at every
    # piece's start than transformers gives the whole document.
    from transformers import AutoTokenizer

    from gptlab.data import documents
    from gptlab.data.documents import TextFiles
    from gptlab.data.prepare import prepare_shards
    from gptlab.data.shards import open_shard

    folder = _prefixing_tokenizer(tmp_path / "tokenizer", shakespeare_text, style)
    monkeypatch.setattr(documents, "PIECE_BYTES", 16 << 10)  # about 20 pieces a document
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    parts = {"a.txt": shakespeare_text[:300_000], "b.txt": shakespeare_text[300_000:400_000]}  # two documents
    for name, part in parts.items():
        (corpus / name).write_text(part, encoding="utf-8")
    source = TextFiles(str(corpus), val_ratio=0.5)
    prepared = prepare_shards(source, str(folder), tmp_path / "cache", progress=False)
    theirs = AutoTokenizer.from_pretrained(str(folder))
    for split in ("train", "val"):
        ours = [int(i) for path in prepared.paths(split) for i in open_shard(path)]
        chosen = [part for index, part in enumerate(parts.values()) if documents.held_out(index, 0.5) == (split == "val")]
        assert chosen and ours == sum((theirs.encode(part, add_special_tokens=False) + [theirs.eos_token_id] for part in chosen), [])
