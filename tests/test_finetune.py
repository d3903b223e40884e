"""Fine-tuning: LoRA on our GPT and on transformers models, and model=hf_causal_lm (issue: fine-tuning)."""

from __future__ import annotations

import warnings

import pytest
import torch
from cli_runner import TINY_RUN, assert_ok, read_metrics, run_script, run_train
from tiny_models import tiny_gpt
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from gptlab.core.errors import ConfigError
from gptlab.data.tokenizers import CharTokenizer, GPT2Tokenizer
from gptlab.hub.export import hf_tokenizer_from_spec
from gptlab.models import GPT
from gptlab.models.hf_causal_lm import HFCausalLM, check_tokenizer_agrees, load_pretrained_hf
from gptlab.training.finetune import apply_finetune, merge_finetune, parameter_summary

LORA = {"name": "lora", "rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}


def seeded_gpt() -> GPT:
    torch.manual_seed(0)
    return tiny_gpt(vocab_size=50257, context_length=64, n_heads=2)


def tiny_hf_folder(path, vocab_size: int = 50257, with_tokenizer: bool = True):
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=64)
    GPT2LMHeadModel(config).save_pretrained(path)
    if with_tokenizer:
        hf_tokenizer_from_spec({"kind": "gpt2"}).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    return tiny_hf_folder(tmp_path_factory.mktemp("hf") / "tiny-gpt2")


def models(hf_folder):
    return {"gpt": seeded_gpt(), "hf_causal_lm": HFCausalLM(model=load_pretrained_hf(str(hf_folder)))}


@pytest.mark.parametrize("kind", ["gpt", "hf_causal_lm"])
def test_lora_starts_as_the_base_model_and_trains_only_adapters(hf_folder, kind):
    base = models(hf_folder)[kind].eval()
    idx = torch.randint(0, 50257, (2, 16))
    expected = base(idx).detach()
    before = {name: p.detach().clone() for name, p in base.named_parameters()}

    model = apply_finetune(base, LORA)
    assert torch.allclose(model(idx), expected, atol=1e-6)  # B = 0: step 0 is the base model

    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    model(idx).square().mean().backward()
    optimizer.step()
    for name, p in model.named_parameters():
        if "lora_" in name:
            assert p.requires_grad and p.grad is not None, name
        else:
            assert not p.requires_grad and p.grad is None, name
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # the adapters moved
    base_now = {
        n.replace("base_model.model.", "").replace("base_layer.", ""): p
        for n, p in model.named_parameters()
        if "lora_" not in n
    }
    assert base_now.keys() == before.keys()
    for name, value in before.items():
        assert torch.equal(base_now[name], value), f"{name} changed"


def test_lora_on_a_transformers_gpt2_warns_about_nothing(hf_folder):
    # peft warned that fan_in_fan_out was wrong for GPT-2's Conv1D layers (and fixed it itself), and
    # transformers 5.23 that peft 0.21's call of is_gradient_checkpointing is deprecated: both in every
    # finetune=lora run and every generation from its checkpoint, neither the user's to act on.
    base = models(hf_folder)["hf_causal_lm"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = apply_finetune(base, LORA)
    assert [str(w.message) for w in caught] == []
    assert model.hf.peft_config["default"].fan_in_fan_out  # GPT-2's Conv1D stores its weight as (in, out)


@pytest.mark.parametrize("kind", ["gpt", "hf_causal_lm"])
def test_merged_weights_give_the_adapter_model_logits(hf_folder, kind):
    model = apply_finetune(models(hf_folder)[kind], LORA).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    idx = torch.randint(0, 50257, (2, 16))
    with_adapters = model(idx).detach()
    merged = merge_finetune(model)
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    assert torch.allclose(merged(idx), with_adapters, atol=1e-5)


def test_lora_rank_16_on_the_124m_gpt():
    gpt2 = GPT(vocab_size=50257, context_length=1024, emb_dim=768, n_heads=12, n_layers=12, qkv_bias=True, tie_weights=True)
    model = apply_finetune(gpt2, {"name": "lora", "rank": 16, "alpha": 32, "target_modules": "all-linear"})
    # 12 blocks x 16 x [(768 + 2304) + (768 + 768) + (768 + 3072) + (3072 + 768)]: our q, k, v are one layer.
    assert parameter_summary(model).startswith("2,359,296 trainable of 126,799,104 parameters")


def test_an_unset_alpha_is_twice_the_rank():
    # The schema gives every finetune key, null included; null alpha means 2 x rank, as conf/finetune/ says.
    model = apply_finetune(tiny_gpt(), {"name": "lora", "rank": 4, "alpha": None, "dropout": 0.0})
    assert model.peft_config["default"].lora_alpha == 8


def test_tokenizer_mismatch_is_a_clear_error(tmp_path):
    small_vocab = HFCausalLM(model=load_pretrained_hf(str(tiny_hf_folder(tmp_path / "v100", 100, with_tokenizer=False))))
    with pytest.raises(ConfigError, match="has 100 token ids but the data's gpt2 tokenizer has 50257"):
        check_tokenizer_agrees("v100", small_vocab, GPT2Tokenizer())
    gpt2_vocab = HFCausalLM(model=load_pretrained_hf(str(tiny_hf_folder(tmp_path / "v50257"))))
    chars = CharTokenizer("abc ")
    with pytest.raises(ConfigError, match="uses a different tokenizer from the data's \\(char\\)"):
        check_tokenizer_agrees(str(tmp_path / "v50257"), gpt2_vocab, chars)


@pytest.mark.e2e
def test_hf_causal_lm_trains_through_train_py_and_its_checkpoint_generates(tmp_path, hf_folder):
    run_dir = tmp_path / "run"
    result = run_train(run_dir, "model=hf_causal_lm", f"model.pretrained={hf_folder}", "data=verdict", *TINY_RUN, "logger=csv")
    assert_ok(result)
    assert any(r.get("val/loss") for r in read_metrics(run_dir))
    generated = run_script("generate.py", f"ckpt_path={run_dir}", "prompt=Every effort", "max_new_tokens=5", "temperature=0")
    assert_ok(generated)
    assert generated.stdout.startswith("Every effort")


@pytest.mark.e2e
def test_hf_causal_lm_with_another_tokenizer_stops_before_training(tmp_path):
    folder = tiny_hf_folder(tmp_path / "v100", vocab_size=100, with_tokenizer=False)
    result = run_train(tmp_path / "run", "model=hf_causal_lm", f"model.pretrained={folder}", "data=verdict", *TINY_RUN, "logger=csv")
    assert result.returncode == 2
    assert "has 100 token ids but the data's gpt2 tokenizer has 50257" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.e2e
def test_lora_run_resumes_and_exports_merged(tmp_path, hf_folder):
    first = tmp_path / "first"
    lora = ["finetune=lora", "finetune.rank=4", f"init_from={hf_folder}", "data=verdict", *TINY_RUN, "logger=csv"]
    result = run_train(first, *lora)
    assert_ok(result)
    assert "finetune=lora:" in result.stdout and "trainable of" in result.stdout

    resumed = tmp_path / "resumed"
    result = run_train(
        resumed, *lora, f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}", "trainer.max_steps=6", "trainer.max_epochs=3"
    )
    assert_ok(result)
    steps = [int(r["step"]) for r in read_metrics(resumed) if r.get("train/loss")]
    assert steps[0] == 4 and steps[-1] == 5

    out_dir = tmp_path / "exported"
    exported = run_script("export.py", f"ckpt_path={resumed / 'checkpoints' / 'last.ckpt'}", f"out_dir={out_dir}")
    assert_ok(exported)
    from gptlab.checkpoints.loading import load_checkpoint_model

    ours, _, _ = load_checkpoint_model(resumed / "checkpoints" / "last.ckpt")
    theirs = AutoModelForCausalLM.from_pretrained(out_dir).eval()
    idx = torch.randint(0, 50257, (1, 12))
    assert torch.allclose(theirs(idx).logits, ours(idx), atol=1e-4)


def test_a_padded_embedding_never_predicts_its_padding():
    # An embedding of 50304 rows for GPT-2's 50257 ids: the padded rows' logits are cut off.
    hf_config = {"model_type": "gpt2", "vocab_size": 50304, "n_embd": 16, "n_layer": 1, "n_head": 2, "n_positions": 32}
    model = HFCausalLM(hf_config=hf_config, vocab_size=50257)
    assert model.embedding_rows == 50304
    assert model(torch.zeros(1, 4, dtype=torch.long)).shape == (1, 4, 50257)
    rebuilt = HFCausalLM(**model.config_dict())  # what a checkpoint rebuilds
    assert rebuilt(torch.zeros(1, 4, dtype=torch.long)).shape == (1, 4, 50257)


@pytest.mark.parametrize("start", ["init_from", "hf_causal_lm"])
def test_the_default_window_follows_the_pretrained_start_model(tmp_path, hf_folder, start):
    from compose import compose_train

    from gptlab.models.factory import data_and_start_model, positions_trained

    pretrained = (
        [f"init_from={hf_folder}"] if start == "init_from" else ["model=hf_causal_lm", f"model.pretrained={hf_folder}"]
    )
    cfg = compose_train(tmp_path, "data=verdict", *pretrained)  # gpt124m's 1024 positions, the folder's 64
    datamodule, model, model_cfg = data_and_start_model(cfg)
    assert datamodule.max_length == model.context_length == 64
    assert positions_trained(cfg, datamodule, model_cfg) == 64  # pretraining covered all its positions
    too_long = compose_train(tmp_path, "data=verdict", "data.max_length=128", *pretrained)
    with pytest.raises(ConfigError, match="data.max_length=128 is longer than the .*context_length=64"):
        data_and_start_model(too_long)
