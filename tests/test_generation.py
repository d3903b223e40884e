"""Decoding: KV cache equivalence, top-k/top-p support, per-row EOS, beam search basics, argument checks."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from gptlab.core.errors import ConfigError
from gptlab.data.tokenizers import GPT2Tokenizer
from gptlab.generation import decoding as generation
from gptlab.generation.command import TextStream
from gptlab.generation.decoding import check_sampling_args, filter_logits, generate
from gptlab.models import GPT, TransformerDecoderLM

VOCAB, CONTEXT = 61, 16
REPO_ROOT = Path(__file__).resolve().parents[1]


def tiny_gpt(attn_impl: str = "sdpa", tie_weights: bool = False) -> GPT:
    torch.manual_seed(0)
    model = GPT(
        vocab_size=VOCAB,
        context_length=CONTEXT,
        emb_dim=32,
        n_heads=4,
        n_layers=2,
        drop_rate=0.0,
        qkv_bias=True,
        attn_impl=attn_impl,
        tie_weights=tie_weights,
    )
    with torch.no_grad():  # wide weights: distinct logits, so greedy choices never hinge on rounding
        for param in model.parameters():
            param.normal_(0.0, 0.3)
    return model.eval()


class FixedLogits(nn.Module):
    """Returns the same next-token logits at every position (no KV cache: the generic path)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(idx.size(0), idx.size(1), -1)


class Counter(nn.Module):
    """Always predicts last token + 1 (mod vocab), so each row's path to EOS is known in advance."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return 50.0 * nn.functional.one_hot((idx + 1) % 10, 10).float()


def token_lengths_seen(model: GPT) -> list[int]:
    seen: list[int] = []
    model.tok_emb.register_forward_hook(lambda module, args, out: seen.append(args[0].size(1)))
    return seen


# --- the model's KV cache ---------------------------------------------------------------------------


@pytest.mark.parametrize("attn_impl", ["sdpa", "manual"])
def test_cached_forward_in_chunks_equals_full_forward(attn_impl):
    model = tiny_gpt(attn_impl)
    idx = torch.randint(0, VOCAB, (3, CONTEXT))
    with torch.no_grad():
        full = model(idx)
        cache = model.new_kv_cache()
        chunks = [model(idx[:, a:b], kv_cache=cache) for a, b in ((0, 5), (5, 6), (6, 11), (11, CONTEXT))]
    assert torch.allclose(torch.cat(chunks, dim=1), full, atol=1e-5)
    assert cache.length == CONTEXT
    with pytest.raises(ConfigError, match="context_length"):
        model(idx[:, :1], kv_cache=cache)


@pytest.mark.parametrize("max_new_tokens", [8, 40])  # within the window, and sliding well past it
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_kv_cache_gives_the_same_tokens(max_new_tokens, temperature):
    model = tiny_gpt()
    idx = torch.randint(0, VOCAB, (3, 5), generator=torch.Generator().manual_seed(1))
    outputs = []
    for use_cache in (True, False):
        generator = torch.Generator().manual_seed(7)
        outputs.append(
            generate(
                model,
                idx,
                max_new_tokens,
                CONTEXT,
                temperature=temperature,
                generator=generator,
                use_cache=use_cache,
            )
        )
    assert outputs[0].shape == (3, 5 + max_new_tokens)
    assert torch.equal(outputs[0], outputs[1])


def test_kv_cache_feeds_one_token_per_step_until_the_window_slides(monkeypatch, capsys):
    monkeypatch.setattr(generation, "_shown_notices", set())
    model = tiny_gpt()
    seen = token_lengths_seen(model)
    generate(model, torch.zeros(1, 5, dtype=torch.long), 14, CONTEXT, temperature=0)
    # Prefill 5, then one token a step up to 16 tokens, then the whole 16-token window each step.
    assert seen == [5] + [1] * 11 + [CONTEXT] * 2
    generate(model, torch.zeros(1, 5, dtype=torch.long), 14, CONTEXT, temperature=0)
    notes = [line for line in capsys.readouterr().err.splitlines() if "window slides" in line]
    assert len(notes) == 1  # said once, not once per token or per call


def test_beam_search_with_and_without_cache_agree_past_the_window():
    model = tiny_gpt(tie_weights=True)
    idx = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(2))
    cached = generate(model, idx, 20, CONTEXT, num_beams=3)
    uncached = generate(model, idx, 20, CONTEXT, num_beams=3, use_cache=False)
    assert torch.equal(cached, uncached)
    assert cached.shape == (2, 26)


def test_generic_path_for_the_transformer_decoder():
    torch.manual_seed(0)
    model = TransformerDecoderLM(vocab_size=VOCAB, context_length=CONTEXT, emb_dim=16, n_heads=2, n_layers=1)
    model.train()
    idx = torch.randint(0, VOCAB, (2, 4))
    out = generate(
        model,
        idx,
        30,
        CONTEXT,
        temperature=0.8,
        top_k=5,
        top_p=0.9,
        generator=torch.Generator().manual_seed(0),
    )
    assert model.training  # its mode is given back
    # The reference: the plain loop over the last CONTEXT tokens, in eval mode, drawing from the same generator.
    model.eval()
    expected, generator = idx, torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(30):
            logits = model(expected[:, -CONTEXT:])[:, -1, :]
            probs = torch.softmax(filter_logits(logits, 0.8, 5, 0.9), dim=-1)
            expected = torch.cat([expected, torch.multinomial(probs, 1, generator=generator)], dim=1)
    assert torch.equal(out, expected)
    beams = generate(model, idx, 5, CONTEXT, num_beams=2)
    assert beams.shape == (2, 9)


# --- sampling filters -------------------------------------------------------------------------------


def test_top_k_never_samples_outside_the_k_most_likely():
    logits = torch.randn(50, generator=torch.Generator().manual_seed(0))
    allowed = set(torch.topk(logits, 5).indices.tolist())
    out = generate(
        FixedLogits(logits),
        torch.zeros(20, 1, dtype=torch.long),
        100,
        8,
        temperature=1.5,
        top_k=5,
        generator=torch.Generator().manual_seed(0),
    )
    drawn = set(out[:, 1:].flatten().tolist())
    assert drawn == allowed  # never outside, and every allowed token does come up in 2,000 draws


@pytest.mark.parametrize("top_p", [0.3, 0.75, 0.95])
def test_top_p_never_samples_outside_the_nucleus(top_p):
    logits = torch.randn(40, generator=torch.Generator().manual_seed(1)) * 2
    probs = torch.softmax(logits, dim=-1)
    # Reference nucleus: most likely tokens first, until they hold top_p of the mass.
    nucleus, mass = set(), 0.0
    for token in torch.argsort(probs, descending=True).tolist():
        nucleus.add(token)
        mass += probs[token].item()
        if mass >= top_p:
            break
    out = generate(
        FixedLogits(logits),
        torch.zeros(20, 1, dtype=torch.long),
        100,
        8,
        top_p=top_p,
        generator=torch.Generator().manual_seed(0),
    )
    drawn = set(out[:, 1:].flatten().tolist())
    assert drawn <= nucleus
    assert len(drawn) >= min(len(nucleus), 2)


def test_filter_logits_applies_top_k_then_top_p():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    assert torch.isinf(filter_logits(logits, 1.0, top_k=2)).tolist() == [[False, False, True, True, True]]
    # p=0.5: the best token alone holds ~64% of the mass.
    assert torch.isinf(filter_logits(logits, 1.0, top_p=0.5)).tolist() == [[False, True, True, True, True]]
    assert not torch.isinf(filter_logits(logits, 1.0, top_p=1.0)).any()
    # Together, top-k first: the nucleus is taken of the renormalised top 3 (0.67, 0.24, 0.09), so p=0.9 keeps
    # two tokens; over the full distribution (0.64, 0.23, 0.09, ...) it would have kept three.
    both = filter_logits(logits, 1.0, top_k=3, top_p=0.9)
    assert torch.isinf(both).tolist() == [[False, False, True, True, True]]
    assert torch.isinf(filter_logits(logits, 1.0, top_p=0.9)).tolist() == [[False, False, False, True, True]]


# --- EOS -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_eos_stops_each_row_of_a_batch_independently(temperature):
    eos = 7
    idx = torch.tensor([[5], [2], [8]])  # reach 7 after 2 steps, after 5 steps, never (8 -> 9 -> 0 ...)
    out = generate(
        Counter(), idx, 9, 32, temperature=temperature, eos_id=eos, generator=torch.Generator().manual_seed(0)
    )
    assert out[0].tolist() == [5, 6, 7] + [eos] * 7  # finished rows are padded with EOS
    assert out[1].tolist() == [2, 3, 4, 5, 6, 7] + [eos] * 4
    assert out[2].tolist() == [8, 9, 0, 1, 2, 3, 4, 5, 6, 7]  # hits EOS only on the last step


def test_decoding_stops_once_every_row_is_finished():
    out = generate(Counter(), torch.tensor([[5], [4]]), 50, 32, temperature=0, eos_id=7)
    assert out.tolist() == [[5, 6, 7, 7], [4, 5, 6, 7]]


# --- arguments --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"num_beams": 0}, "num_beams"),
        ({"num_beams": 3, "top_k": 5}, "deterministic"),
        ({"num_beams": 3, "temperature": 0.7}, "deterministic"),
    ],
)
def test_bad_sampling_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        check_sampling_args(
            kwargs.get("temperature"), kwargs.get("top_k"), kwargs.get("top_p"), kwargs.get("num_beams", 1)
        )


def test_empty_prompt_is_rejected():
    with pytest.raises(ConfigError, match="empty"):
        generate(Counter(), torch.zeros(1, 0, dtype=torch.long), 3, 8)


def test_beam_search_accepts_greedy_temperature():
    out = generate(Counter(), torch.tensor([[1]]), 3, 8, temperature=0, num_beams=2)
    assert out.tolist() == [[1, 2, 3, 4]]


def test_stream_prints_whole_characters_only():
    tokenizer = GPT2Tokenizer()
    ids = tokenizer.encode("Les cafés 日本語 ok")
    out = io.StringIO()
    stream = TextStream(tokenizer.decode, ids[:1], out)
    chunks = []
    for token in ids[1:]:
        before = out.getvalue()
        stream.add([token])
        chunks.append(out.getvalue()[len(before) :])
    stream.finish()
    assert "\ufffd" not in out.getvalue()
    assert tokenizer.decode(ids[:1]) + out.getvalue() == "Les cafés 日本語 ok\n"
    assert "" in chunks  # some tokens held back a partial character


# --- model options ---------------------------------------------------------------------------------


def test_default_gpt_parameter_count_is_unchanged():
    with torch.device("meta"):
        assert sum(p.numel() for p in GPT().parameters()) == 163_009_536


@pytest.mark.parametrize(
    ("name", "n_params"),
    [
        ("gpt2", 124_439_808),
        ("gpt2-medium", 354_823_168),
        ("gpt2-large", 774_030_080),
        ("gpt2-xl", 1_557_611_200),
    ],
)
def test_gpt2_model_configs_have_openai_shapes(name, n_params):
    cfg = OmegaConf.to_container(OmegaConf.load(REPO_ROOT / "conf" / "model" / f"{name}.yaml"))
    assert cfg.pop("defaults")[0].startswith("/schema/model/gpt@")  # typed by the GPT's schema
    assert cfg.pop("_target_") == "gptlab.models.GPT"
    assert cfg.pop("vocab_size") is None  # the tokenizer's, filled in by train.py
    with torch.device("meta"):
        model = GPT(**cfg, vocab_size=50257)
    assert model.out_head.weight is model.tok_emb.weight
    assert sum(p.numel() for p in model.parameters()) == n_params


def test_kv_cache_works_under_autocast():
    # The training loop's sample callback may decode inside bf16 autocast: the cache takes the keys' dtype.
    model = tiny_gpt()
    idx = torch.randint(0, VOCAB, (2, 4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cached = generate(model, idx, 6, CONTEXT, temperature=0)
        uncached = generate(model, idx, 6, CONTEXT, temperature=0, use_cache=False)
    assert cached.shape == (2, 10) and torch.equal(cached, uncached)


@pytest.mark.parametrize(
    "options",
    [{"temperature": 0}, {"temperature": 5.0}, {"temperature": 1.0, "top_p": 0.99}, {"num_beams": 3}],
    ids=["greedy", "hot", "top-p", "beam"],
)
def test_ids_past_the_tokenizers_vocabulary_are_never_produced(options):
    # A head of 10 ids whose favourite by far is id 9, for a tokenizer of 8 ids (9 and 8 are padding).
    logits = torch.zeros(10)
    logits[9], logits[8] = 50.0, 40.0
    ids = generate(
        FixedLogits(logits), torch.zeros(4, 1, dtype=torch.long), max_new_tokens=20, context_length=CONTEXT,
        generator=torch.Generator().manual_seed(0), vocab_size=8, **options,
    )
    assert int(ids.max()) < 8


@pytest.mark.parametrize("attn_impl", ["sdpa", "manual"])
def test_left_padded_prompts_in_one_cache_decode_as_each_alone(attn_impl):
    """A server batches prompts of different lengths by left padding (KVCache.left_padding): positions count
    from each row's first real token and no query sees padding, so each row's logits, step after step, are
    those of its prompt alone."""
    from tiny_models import tiny_gpt

    torch.manual_seed(0)
    model = tiny_gpt(context_length=32, attn_impl=attn_impl).eval()
    prompts = [torch.randint(0, 50, (length,)).tolist() for length in (5, 9, 1)]
    longest = max(map(len, prompts))
    padding = torch.tensor([longest - len(p) for p in prompts])
    batch = torch.tensor([[0] * (longest - len(p)) + p for p in prompts])
    cache = model.new_kv_cache(left_padding=padding)
    with torch.no_grad():
        logits = model(batch, kv_cache=cache, last_only=True)[:, -1]
        for step in range(4):
            for row, prompt in enumerate(prompts):
                torch.testing.assert_close(logits[row], model(torch.tensor([prompt]))[0, -1])
            new = logits.argmax(-1, keepdim=True)
            prompts = [p + [int(t)] for p, t in zip(prompts, new, strict=True)]
            if step == 2:  # a finished row leaves the batch
                cache.reorder(torch.tensor([0, 2]))
                new, prompts = new[[0, 2]], [prompts[0], prompts[2]]
            logits = model(new, kv_cache=cache, last_only=True)[:, -1]
