"""Model FLOPs per token against hand counts, and where the peak FLOP/s figure comes from."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from tiny_models import tiny_gpt
from torch import nn

import gptlab.models.flops as flops
from gptlab.models.decoder import TransformerDecoderLM
from gptlab.models.flops import matmul_parameter_count, model_flops_per_token, peak_flops
from gptlab.models.gpt import GPT
from gptlab.training.finetune import apply_finetune

# The tiny shape every hand count below uses: vocab 10, width d=4, 1 layer, 2 heads, window T=3.
V, D, T = 10, 4, 3


def tiny(**overrides) -> GPT:
    return tiny_gpt(**{"vocab_size": V, "context_length": 8, "emb_dim": D, "n_heads": 2, "n_layers": 1, **overrides})


# N by hand for tiny(): every parameter but the embedding tables (token 10x4, position 8x4).
# LayerNorm scales/shifts and biases are no matmul weights but count in N, as in PaLM and nanoGPT.
QKV = D * 3 * D  # 48: one linear to q, k, v; no bias (qkv_bias=False)
OUT_PROJ = D * D + D  # 20
FC = D * 4 * D + 4 * D  # 80
PROJ = 4 * D * D + D  # 68
BLOCK_NORMS = 2 * (D + D)  # 16: norm1, norm2
FINAL_NORM = D + D  # 8
HEAD = V * D  # 40: the output head, no bias
N_TINY = QKV + OUT_PROJ + FC + PROJ + BLOCK_NORMS + FINAL_NORM + HEAD
ATTENTION = 12 * 1 * D * T  # 12 L d T = 144: q @ k^T and scores @ v, forward and backward


def test_hand_count_of_a_tiny_gpt():
    assert N_TINY == 280
    assert model_flops_per_token(tiny(), window=T) == 6 * 280 + 144 == 1824


def test_tied_token_table_counts_once_as_the_head():
    untied, tied = tiny(), tiny(tie_weights=True)
    assert tied.out_head.weight is tied.tok_emb.weight
    # Untied: the token table is a lookup (not counted); the head's 40 weights are. Tied: the same 40
    # weights are the head's matmul, counted once, never twice (that would be 320).
    assert matmul_parameter_count(untied) == matmul_parameter_count(tied) == 280
    assert sum(p.numel() for p in untied.parameters()) == 280 + V * D + 8 * D  # tables exist, uncounted
    assert model_flops_per_token(tied, window=T) == 1824


def test_padded_head_rows_are_computed_so_they_count():
    padded = tiny(vocab_pad_multiple=64)  # head 64 x 4 instead of 10 x 4
    assert padded.out_head.weight.shape == (64, D)
    assert matmul_parameter_count(padded) == 280 - HEAD + 64 * D == 496
    tied_padded = tiny(vocab_pad_multiple=64, tie_weights=True)
    assert matmul_parameter_count(tied_padded) == 496


def test_no_bias_leaves_out_the_biases_and_layernorm_shifts():
    # qkv 48, out_proj 16, fc 64, proj 64, norm1/norm2/final_norm scales 3 x 4, head 40
    assert matmul_parameter_count(tiny(bias=False)) == 48 + 16 + 64 + 64 + 12 + 40 == 244


def test_window_only_changes_the_attention_term():
    model = tiny()
    assert model_flops_per_token(model, 8) - model_flops_per_token(model, 3) == 12 * 1 * D * (8 - 3)


def test_decoder_counts_self_and_cross_attention():
    torch.manual_seed(0)
    model = TransformerDecoderLM(vocab_size=V, context_length=8, emb_dim=D, n_heads=2, n_layers=1, ff_dim=8)
    # nn.MultiheadAttention: in_proj 3d x d + 3d bias, out_proj d x d + d: 80 each, self and cross
    attention = 3 * D * D + 3 * D + D * D + D
    feed_forward = (D * 8 + 8) + (8 * D + D)  # 40 + 36
    norms = 3 * 2 * D + 2 * D + 2 * D  # three per layer, the final one and the memory's
    head = D * V + V  # with bias
    n = 2 * attention + feed_forward + norms + head
    assert n == 326
    # Two attentions per layer over T positions each: memory is the input again.
    assert model_flops_per_token(model, window=T) == 6 * 326 + 2 * 12 * D * T


def test_transformers_gpt2_matches_our_gpt_of_the_same_shape():
    from transformers import GPT2Config, GPT2LMHeadModel

    from gptlab.models.hf_causal_lm import HFCausalLM

    hf = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_positions=8, n_embd=D, n_layer=1, n_head=2))
    # GPT-2: qkv with bias (+12), tied head; otherwise the same parameters as tiny().
    ours = tiny(qkv_bias=True, tie_weights=True)
    expected = 6 * (280 + 3 * D) + 144
    assert model_flops_per_token(ours, T) == expected
    assert model_flops_per_token(hf, T) == expected
    assert model_flops_per_token(HFCausalLM(model=hf), T) == expected


def test_counting_our_model_loads_no_transformers_modules():
    """torchmetrics imports the transformers package wherever it is installed; reading its lazy
    PreTrainedModel to rule a transformers model out loaded 0.2 s of modules at every run's start."""
    code = (
        "import sys, transformers\n"
        "from gptlab.models.flops import model_flops_per_token\n"
        "from gptlab.models.gpt import GPT\n"
        "from torch import nn\n"
        "model = GPT(vocab_size=10, context_length=8, emb_dim=4, n_heads=2, n_layers=1)\n"
        "wrapped = nn.ModuleDict({'model': model})  # as the LightningModule holds it: looked at first\n"
        "assert model_flops_per_token(wrapped, 3) > 0\n"
        "print('transformers.modeling_utils' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_layers_and_width_are_read_under_either_family_of_config_names():
    from transformers import GPT2Config, LlamaConfig

    from gptlab.models.hf_causal_lm import hf_layers_and_width

    assert hf_layers_and_width(GPT2Config(n_layer=3, n_embd=16)) == (3, 16)
    assert hf_layers_and_width(
        LlamaConfig(num_hidden_layers=2, hidden_size=8, num_attention_heads=2)
    ) == (2, 8)


def test_lora_counts_base_weights_and_adapters_through_any_wrapper():
    model = apply_finetune(
        tiny(), {"name": "lora", "rank": 2, "target_modules": ["qkv", "out_proj", "fc", "proj"]}
    )
    # Adapters A (r x in) and B (out x r) per adapted linear, r=2:
    adapters = (2 * D + 3 * D * 2) + (2 * D + D * 2) + (2 * D + 4 * D * 2) + (2 * 4 * D + D * 2)
    assert adapters == 32 + 16 + 40 + 40
    assert model_flops_per_token(model, T) == 6 * (280 + adapters) + 144
    # The same model inside another module (as in the LightningModule) is found.
    assert model_flops_per_token(nn.ModuleDict({"model": model}), T) == 6 * (280 + adapters) + 144


def test_lora_on_a_transformers_model_inside_our_wrapper():
    from transformers import GPT2Config, GPT2LMHeadModel

    from gptlab.models.hf_causal_lm import HFCausalLM

    wrapped = HFCausalLM(
        model=GPT2LMHeadModel(GPT2Config(vocab_size=V, n_positions=8, n_embd=D, n_layer=1, n_head=2))
    )
    base = model_flops_per_token(wrapped, T)
    apply_finetune(wrapped, {"name": "lora", "rank": 2, "target_modules": ["c_attn"]})
    assert model_flops_per_token(wrapped, T) == base + 6 * (2 * D + 3 * D * 2)  # one adapter on c_attn


def test_unknown_architecture_gives_none():
    assert model_flops_per_token(nn.Sequential(nn.Embedding(V, D), nn.Linear(D, V)), T) is None


def test_configured_peak_wins_and_nothing_is_measured(monkeypatch):
    monkeypatch.setattr(flops, "measure_peak_flops", _must_not_measure)
    assert peak_flops(torch.device("cpu"), "bf16-mixed", 1.5) == 1.5e12
    assert peak_flops(torch.device("mps"), "32-true", 2) == 2e12
    assert peak_flops(torch.device("cuda"), "bf16-mixed", 3) == 3e12


@pytest.mark.parametrize(
    "precision, dtype",
    [
        ("bf16-mixed", torch.bfloat16),
        ("bf16-true", torch.bfloat16),
        ("32-true", torch.float32),
        ("16-mixed", torch.float16),
    ],
)
def test_cpu_peak_is_measured_in_the_dtype_matmuls_run_in(monkeypatch, precision, dtype):
    asked = []
    monkeypatch.setattr(flops, "measure_peak_flops", lambda d, device, repeats: asked.append((d, device.type)) or 7e11)
    assert peak_flops(torch.device("cpu"), precision, None) == 7e11
    assert asked == [(dtype, "cpu")]


def test_gpu_peak_comes_from_lightnings_table(monkeypatch):
    import lightning.fabric.utilities.throughput as lightning_throughput

    monkeypatch.setattr(flops, "measure_peak_flops", _must_not_measure)
    monkeypatch.setattr(
        lightning_throughput, "get_available_flops", lambda device, dtype: {torch.bfloat16: 9e14}.get(dtype)
    )
    assert peak_flops(torch.device("cuda", 0), "bf16-mixed", None) == 9e14
    assert peak_flops(torch.device("cuda", 0), "64-true", None) is None  # not in the table


def test_unknown_peak_is_none(monkeypatch):
    monkeypatch.setattr(flops, "measure_peak_flops", _must_not_measure)
    assert peak_flops(torch.device("mps"), "bf16-mixed", None) is None
    assert peak_flops(torch.device("cpu"), "transformer-engine", None) is None


def test_measured_peak_is_the_best_rate_over_repeats_and_shapes(monkeypatch):
    # A scripted clock: each timed matmul takes the next duration. Shape (2x3)@(3x4) is 48 FLOPs, shape
    # (4x4)@(4x4) 128: rates 48, 96 then 64, 128 FLOP/s; the peak is the best of them all.
    durations = iter([1.0, 0.5, 2.0, 1.0])
    clock = {"now": 0.0, "started": False}

    def perf_counter():
        if clock["started"]:
            clock["now"] += next(durations)
        clock["started"] = not clock["started"]
        return clock["now"]

    monkeypatch.setattr(flops, "PEAK_SHAPES", ((2, 3, 4), (4, 4, 4)))
    monkeypatch.setattr(flops, "time", SimpleNamespace(perf_counter=perf_counter))
    assert flops.measure_peak_flops(torch.float32, repeats=2) == 128.0


def test_measuring_a_real_peak_gives_a_rate_and_leaves_the_global_rng_alone(monkeypatch):
    monkeypatch.setattr(flops, "PEAK_SHAPES", ((256, 256, 256), (128, 64, 192)))
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    assert flops.measure_peak_flops(torch.bfloat16, repeats=1) > 0
    assert torch.equal(torch.rand(3), expected)


def _must_not_measure(*args, **kwargs):
    raise AssertionError("the peak must not be measured here")
