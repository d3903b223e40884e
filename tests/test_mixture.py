"""data=mixture: the share of training windows from each source is its weight, a small source wraps around
(each pass in a new order), ranks take disjoint windows, a resumed epoch continues the same order, the
tokens counted per source are the ones drawn, and each bad mixture gets one clear error."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from corpus_files import write_speech_files

from gptlab.core.errors import ConfigError, DataError
from gptlab.data.mixture_datamodule import MixtureDataModule
from gptlab.data.mixture_sampler import MixtureSampler, source_quotas


def source_of(index: int, offsets: list[int]) -> int:
    return max(s for s, start in enumerate(offsets[:-1]) if index >= start)


def test_quotas_split_the_epoch_by_weight_to_within_one_window():
    for weights, total in [([3, 1], 1000), ([1, 1, 1], 100), ([0.7, 0.2, 0.1], 12345), ([5, 0, 1], 7)]:
        quotas = source_quotas(weights, total)
        assert sum(quotas) == total
        for quota, weight in zip(quotas, weights, strict=True):
            assert abs(quota - total * weight / sum(weights)) < 1


def test_each_epoch_draws_every_source_by_its_weight_and_a_small_source_wraps_around():
    sizes, weights = [900, 60, 40], [0.5, 0.3, 0.2]  # the small sources are drawn 2.5 times per epoch
    sampler = MixtureSampler(sizes, weights, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert len(order) == sum(sizes)
        by_source = Counter(source_of(i, sampler.offsets) for i in order)
        assert [by_source[s] for s in range(3)] == [500, 300, 200]
        # The first tenth of an epoch already holds each share closely (a random interleaving).
        head = Counter(source_of(i, sampler.offsets) for i in order[:100])
        assert all(abs(head[s] - 100 * w) <= 15 for s, w in enumerate(weights))

    # Source 2 (40 windows) drawn 200 times an epoch: every pass of 40 draws holds each window once.
    draws = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        sources, slots = sampler.sources(epoch)
        drawn = torch.tensor(list(sampler))
        mine = drawn[sources == 2] - sampler.offsets[2]
        draws += mine[torch.argsort(slots[sources == 2])].tolist()  # in draw order
    passes = [draws[i : i + 40] for i in range(0, len(draws), 40)]
    assert all(sorted(p) == list(range(40)) for p in passes)
    assert passes[0] != passes[1]  # each pass in its own order


def test_a_large_source_is_not_repeated_until_all_of_it_was_drawn():
    sampler = MixtureSampler([1000, 10], [0.5, 0.5], seed=0)  # 505 of 1000 windows an epoch
    seen = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        seen += [i for i in sampler if i < 1000]
    # The second epoch goes on where the first stopped: two epochs (1010 draws) hold every window, and
    # only the 10 draws past the first pass repeat one.
    assert len(seen) == 1010 and len(set(seen[:505])) == 505 and set(seen) == set(range(1000))


def test_the_order_depends_on_seed_and_epoch_only_and_ranks_split_it():
    sizes, weights = [300, 50], [2, 1]
    whole = MixtureSampler(sizes, weights, seed=5)
    whole.set_epoch(1)
    order = list(whole)
    again = MixtureSampler(sizes, weights, seed=5)
    again.set_epoch(1)
    assert list(again) == order
    other = MixtureSampler(sizes, weights, seed=6)
    other.set_epoch(1)
    assert list(other) != order

    ranks = [MixtureSampler(sizes, weights, seed=5, rank=r, num_replicas=3) for r in range(3)]
    parts = []
    for sampler in ranks:
        sampler.set_epoch(1)
        parts.append(list(sampler))
    assert sum(len(p) for p in parts) == len(order) // 3 * 3
    assert [i for trio in zip(*parts, strict=True) for i in trio] == order[: len(order) // 3 * 3]

    resumed = MixtureSampler(sizes, weights, seed=5)
    resumed.resume_at(1, 100)
    assert list(resumed) == order[100:]


def test_windows_drawn_counts_the_order():
    sampler = MixtureSampler([200, 30, 70], [1, 1, 2], seed=1)
    sampler.set_epoch(2)
    order = list(sampler)
    for positions in (0, 1, 57, len(order)):
        counted = Counter(source_of(i, sampler.offsets) for i in order[:positions])
        assert sampler.windows_drawn(2, positions).tolist() == [counted[s] for s in range(3)]


@pytest.fixture
def mixture(tmp_path, data_dir, shakespeare_text):
    write_speech_files(shakespeare_text[:150_000], tmp_path / "plays", files=6)

    def build(sources, **settings):
        settings = {
            "batch_size": 4,
            "max_length": 32,
            "data_dir": str(data_dir),
            "cache_dir": str(tmp_path / "cache"),
            **settings,
        }
        module = MixtureDataModule(sources=sources, **settings)
        module.prepare_data()
        module.setup("fit")
        return module

    build.plays = tmp_path / "plays"
    return build


def test_a_mixture_of_text_files_and_a_preset_trains_by_weight_and_counts_each_source(mixture):
    dm = mixture(
        [
            {"kind": "text", "path": str(mixture.plays), "val_ratio": 0.3, "name": "plays", "weight": 3},
            {"kind": "verdict"},
        ]
    )
    assert dm.source_names == ["plays", "verdict"]
    assert dm.tokenizer.identity() == dm.sources[1].tokenizer.identity()
    loader = dm.train_dataloader()
    order = list(loader.sampler)
    offsets = loader.sampler.offsets
    counts = Counter(source_of(i, offsets) for i in order)
    assert counts[0] / len(order) == pytest.approx(0.75, abs=1 / len(order))
    # The batches hold the sources' own windows: the first batch's inputs are those of its indices.
    first_batch = next(iter(loader))
    for row, index in zip(first_batch[0], order[:4], strict=True):
        assert torch.equal(row, dm.train_set[index][0])
    # Validation scores every source's validation windows.
    assert len(dm.val_set.datasets) == 2 and all(len(part) > 0 for part in dm.val_set.datasets)

    tokens = dm.tokens_by_source(epoch=0, batches_done=10, world_size=1)
    drawn = Counter(source_of(i, offsets) for i in order[:40])
    assert tokens == {"plays": drawn[0] * 32, "verdict": drawn[1] * 32}
    # Counted on from there, and across an epoch that stopped early (limit_train_batches).
    tokens = dm.tokens_by_source(epoch=0, batches_done=12, world_size=1)
    assert sum(tokens.values()) == 12 * 4 * 32
    tokens = dm.tokens_by_source(epoch=1, batches_done=1, world_size=1)
    assert sum(tokens.values()) == 13 * 4 * 32


def test_validation_logs_each_sources_loss_and_the_mixtures_over_all_their_tokens(mixture):
    from tiny_models import TINY_GPT
    from trainers import quiet_trainer

    from gptlab.models.fused_loss import IGNORE_INDEX
    from gptlab.training.module import LanguageModelModule

    dm = mixture([{"kind": "text", "path": str(mixture.plays), "val_ratio": 0.3, "name": "plays"}, {"kind": "verdict"}])
    torch.manual_seed(0)
    module = LanguageModelModule(model=TINY_GPT, tokenizer=dm.tokenizer.spec())
    trainer = quiet_trainer()
    trainer.validate(module, datamodule=dm)
    logged = {name: float(value) for name, value in trainer.callback_metrics.items()}

    # Each source scored alone, every validation window of it once, weighted by the targets it scores.
    totals = {}
    with torch.no_grad():
        for name, windows in zip(["plays", "verdict"], dm.val_set.datasets, strict=True):
            loss_sum = scored = 0.0
            for inputs, targets in torch.utils.data.DataLoader(windows, batch_size=4):
                count = float((targets != IGNORE_INDEX).sum())
                loss_sum += float(module.model.loss(inputs, targets)) * count
                scored += count
            totals[name] = (loss_sum, scored)
            assert logged[f"val/loss/{name}"] == pytest.approx(loss_sum / scored, rel=1e-5)
    assert totals["plays"][1] > 0 and totals["verdict"][1] > 0
    whole = sum(loss for loss, _ in totals.values()) / sum(count for _, count in totals.values())
    assert logged["val/loss"] == pytest.approx(whole, rel=1e-5)
    assert logged["val/loss/plays"] != pytest.approx(logged["val/loss/verdict"], rel=1e-3)

    # best.ckpt validated after fit (validate_after_fit) reports each source too, under best/.
    module.validating_best_checkpoint = True
    trainer.validate(module, datamodule=dm)
    best = {name: float(value) for name, value in trainer.callback_metrics.items() if name.startswith("best/")}
    expected = {"best/val_loss" + name[len("val/loss"):]: logged[name] for name in ("val/loss", "val/loss/plays", "val/loss/verdict")}
    expected["best/val_ppl"] = math.exp(logged["val/loss"])
    assert best == pytest.approx(expected, rel=1e-6)


def test_the_drawn_count_travels_in_the_checkpoint(mixture):
    sources = [{"kind": "shakespeare", "weight": 1}, {"kind": "verdict", "weight": 1}]
    dm = mixture(sources)
    dm.train_dataloader()
    dm.tokens_by_source(epoch=0, batches_done=5, world_size=2)
    after_epoch = dm.tokens_by_source(epoch=1, batches_done=3, world_size=2)
    state = dm.state_dict()

    resumed = mixture(sources)
    resumed.load_state_dict(state)
    resumed.train_dataloader()
    assert resumed.tokens_by_source(epoch=1, batches_done=3, world_size=2) == after_epoch


def bad(mixture, sources, **settings) -> str:
    with pytest.raises((ConfigError, DataError)) as caught:
        mixture(sources, **settings)
    return str(caught.value)


def test_each_bad_mixture_gets_a_clear_message(mixture):
    assert "needs data.sources" in bad(mixture, [])
    assert "data.sources[1].weight=-1 must be a number of 0 or more" in bad(
        mixture, [{"kind": "verdict"}, {"kind": "shakespeare", "weight": -1}]
    )
    assert "every data.sources weight is 0" in bad(mixture, [{"kind": "verdict", "weight": 0}])
    # Two sources of one name logged one tokens_seen/<name> series between them.
    assert "data.sources[1] and data.sources[0] are both named a" in bad(
        mixture, [{"kind": "verdict", "name": "a"}, {"kind": "shakespeare", "name": "a"}]
    )
    assert "data.sources[1] and data.sources[0] are both named verdict_1" in bad(
        mixture, [{"kind": "verdict", "name": "verdict_1"}, {"kind": "verdict"}, {"kind": "verdict"}]
    )
    assert "data.sources[0].kind=csv is not a data kind to mix" in bad(mixture, [{"kind": "csv"}])
    assert "data.sources[0].max_length is the mixture's to set" in bad(
        mixture, [{"kind": "verdict", "max_length": 8}]
    )
    message = bad(mixture, [{"kind": "verdict", "train_ratio": 2}])
    assert message.startswith("data.sources[0] (verdict): ") and "train_ratio" in message
    message = bad(mixture, [{"kind": "verdict", "corpus_name": "x"}])
    assert message.startswith("data.sources[0] (verdict): ") and "corpus_name" in message
    message = bad(mixture, [{"kind": "text"}])
    assert message.startswith("data.sources[0] (text): data.path is not set")


def test_eval_scores_each_source_of_a_mixture_as_it_would_alone_and_the_mixture_over_all(mixture, data_dir, tmp_path):
    from omegaconf import OmegaConf
    from tiny_models import TINY_GPT

    from gptlab.checkpoints.loading import LoadedModel
    from gptlab.data.tokenizers import GPT2Tokenizer
    from gptlab.evaluation.command import perplexity_on_data
    from gptlab.models.gpt import GPT

    torch.manual_seed(0)
    model = GPT(**{k: v for k, v in TINY_GPT.items() if k != "_target_"}).eval()
    loaded = LoadedModel(model=model, tokenizer=GPT2Tokenizer(), trained_window=32, source="tiny")
    plays = {"kind": "text", "path": str(mixture.plays), "val_ratio": 0.3, "name": "plays"}

    def scored(*sources) -> dict:
        data = {
            "_target_": "gptlab.data.mixture_datamodule.MixtureDataModule", "sources": list(sources),
            "data_dir": str(data_dir), "cache_dir": str(tmp_path / "cache"), "batch_size": 4, "max_length": 32,
        }
        cfg = OmegaConf.create({"data": data, "eval": {"split": "val", "batch_size": 8}})
        return perplexity_on_data(cfg, loaded, context=32, stride=32, device="cpu")[1]

    both, plays_alone, verdict_alone = scored(plays, {"kind": "verdict"}), scored(plays), scored({"kind": "verdict"})
    for name, alone in (("plays", plays_alone), ("verdict", verdict_alone)):
        assert "plays/nll" not in alone  # one source: the figures are its own, once
        for metric in ("nll", "ppl", "bits_per_byte", "tokens"):
            assert both[f"{name}/{metric}"] == pytest.approx(alone[metric], rel=1e-6)
    assert both["tokens"] == plays_alone["tokens"] + verdict_alone["tokens"]
    whole = (plays_alone["nll"] * plays_alone["tokens"] + verdict_alone["nll"] * verdict_alone["tokens"]) / both["tokens"]
    assert both["nll"] == pytest.approx(whole, rel=1e-6)


def test_shards_are_a_source_a_mixture_trains_on_and_eval_scores(mixture, data_dir, tmp_path):
    """A shards source (and eval.py data=shards) stopped on an AttributeError: the plain ShardData had no
    prepare_data, a hook only its Lightning twin inherited."""
    from omegaconf import OmegaConf
    from tiny_models import TINY_GPT

    from gptlab.checkpoints.loading import LoadedModel
    from gptlab.data.tokenizers import GPT2Tokenizer
    from gptlab.evaluation.command import perplexity_on_data
    from gptlab.models.gpt import GPT

    plays = {"kind": "text", "path": str(mixture.plays), "val_ratio": 0.3, "name": "plays"}
    mixture([plays])  # tokenises the plays into shards in the cache
    (folder,) = (tmp_path / "cache" / "shards").glob("text-*")
    shards = {"train": f"{folder}/train_*.bin", "val": f"{folder}/val_*.bin"}
    dm = mixture([{"kind": "shards", **shards, "name": "shards"}, {"kind": "verdict"}])
    assert dm.source_names == ["shards", "verdict"]
    assert {source_of(i, dm.train_dataloader().sampler.offsets) for i in dm.train_dataloader().sampler} == {0, 1}

    torch.manual_seed(0)
    model = GPT(**{k: v for k, v in TINY_GPT.items() if k != "_target_"}).eval()
    loaded = LoadedModel(model=model, tokenizer=GPT2Tokenizer(), trained_window=32, source="tiny")

    def scored(data: dict) -> dict:
        cfg = OmegaConf.create({"data": {"batch_size": 4, "max_length": 32, **data}, "eval": {"split": "val", "batch_size": 8}})
        return perplexity_on_data(cfg, loaded, context=32, stride=32, device="cpu")[1]

    mixed = {"data_dir": str(data_dir), "cache_dir": str(tmp_path / "cache")}
    as_text = scored({"_target_": "gptlab.data.mixture_datamodule.MixtureDataModule", "sources": [plays], **mixed})
    as_shards = scored({"_target_": "gptlab.data.shard_datamodule.ShardDataModule", **shards})
    as_source = scored(
        {"_target_": "gptlab.data.mixture_datamodule.MixtureDataModule", "sources": [{"kind": "shards", **shards}], **mixed}
    )
    assert as_shards["tokens"] == as_text["tokens"] > 0
    assert as_shards["nll"] == pytest.approx(as_text["nll"], rel=1e-6) == as_source["nll"]


def test_a_character_model_reads_a_mixture_of_texts_in_its_characters(mixture, data_dir, tmp_path, shakespeare_text):
    """eval.py and init_from on data=mixture data.tokenizer=char: each source built its own vocabulary from its
    text, so a mixture of texts in the model's characters was refused as "other characters"."""
    from omegaconf import OmegaConf
    from tiny_models import TINY_GPT

    from gptlab.checkpoints.loading import LoadedModel
    from gptlab.data.tokenizers import CharTokenizer
    from gptlab.evaluation.command import perplexity_on_data
    from gptlab.models.gpt import GPT

    model_chars = CharTokenizer.from_text(shakespeare_text)
    (tmp_path / "lower.txt").write_text(shakespeare_text[:60_000].lower())  # fewer characters than the model's
    sources = [
        {"kind": "text", "path": str(mixture.plays), "val_ratio": 0.3, "name": "plays"},
        {"kind": "text", "path": str(tmp_path / "lower.txt"), "name": "lower"},
    ]
    torch.manual_seed(0)
    settings = {k: v for k, v in TINY_GPT.items() if k != "_target_"}
    model = GPT(**{**settings, "vocab_size": model_chars.vocab_size}).eval()
    loaded = LoadedModel(model=model, tokenizer=model_chars, trained_window=32, source="a char model")
    data = {
        "_target_": "gptlab.data.mixture_datamodule.MixtureDataModule", "sources": sources, "tokenizer": "char",
        "data_dir": str(data_dir), "cache_dir": str(tmp_path / "cache"), "batch_size": 4, "max_length": 32,
    }
    cfg = OmegaConf.create({"data": data, "eval": {"split": "val", "batch_size": 8}})
    figures = perplexity_on_data(cfg, loaded, context=32, stride=32, device="cpu")[1]
    assert figures["tokens"] == figures["plays/tokens"] + figures["lower/tokens"] > 0



def test_a_character_mixture_from_scratch_reads_every_source_with_the_characters_of_all(mixture, tmp_path, shakespeare_text, monkeypatch):
    """data=mixture data.tokenizer=char was refused: each source took its own corpus's characters."""
    from gptlab.data import prepare
    from gptlab.data.documents import TextFiles
    from gptlab.data.prepare import prepare_shards

    (tmp_path / "lower.txt").write_text(shakespeare_text[:60_000].lower() + "\u00e9")  # a character of its own
    sources = [
        {"kind": "text", "path": str(tmp_path / "lower.txt"), "name": "lower"},
        {"kind": "verdict"},
    ]
    dm = mixture(sources, tokenizer="char")
    verdict_chars = dm.sources[1].characters()
    assert dm.tokenizer.chars == "".join(sorted(set((tmp_path / "lower.txt").read_text()) | set(verdict_chars)))
    assert all(source.tokenizer.identity() == dm.tokenizer.identity() for source in dm.sources)
    stream = dm.sources[0].token_streams("train")[0]
    assert dm.tokenizer.decode(stream[:200].tolist()) == (tmp_path / "lower.txt").read_text()[:200]

    def read_again(source):
        raise AssertionError("the characters were read again, not remembered")

    monkeypatch.setattr(prepare, "_characters_of", read_again)
    assert mixture(sources, tokenizer="char").tokenizer.identity() == dm.tokenizer.identity()
    monkeypatch.undo()

    # Character shards keep their own text's characters: mixed with other text they are refused, in one line.
    made = prepare_shards(TextFiles(str(mixture.plays)), "char", tmp_path / "made", progress=False)
    shards = {"kind": "shards", "train": f"{made.folder}/train_*.bin", "val": f"{made.folder}/val_*.bin"}
    message = bad(mixture, [shards, {"kind": "verdict"}], tokenizer="char")
    assert "data.sources[1] (verdict) is tokenised differently from data.sources[0] (shards)" in message
    assert "character shards keep the characters of the text they were made from" in message
