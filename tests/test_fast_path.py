"""The GPT's fast training path stays the same model: fused head + loss, vocabulary padding, bias option,
fused AdamW and clipping, compile=true. Speed itself is measured by bench/bench_train.py, not here."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from cli_runner import TINY_RUN, assert_ok, run_script, run_train
from tiny_models import tiny_gpt
from torch.utils.data import DataLoader
from trainers import quiet_trainer

import gptlab.models.fused_loss as fused_loss
from gptlab.checkpoints.loading import model_state_dict
from gptlab.checkpoints.reader import load_checkpoint_safely
from gptlab.core.errors import ConfigError
from gptlab.generation.decoding import generate
from gptlab.hub.export import hf_state_dict_from_gpt
from gptlab.models.compile import compile_model
from gptlab.models.gpt import GPT, float32_attention_is_faster
from gptlab.training.module import LanguageModelModule, adamw_kernel

VOCAB = 61  # a size no multiple divides: padding always adds rows


def tiny(**overrides) -> GPT:
    return tiny_gpt(**{"vocab_size": VOCAB, **overrides})


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    # Several chunks even for a tiny batch, so the chunk loop and its seams are exercised.
    monkeypatch.setattr(fused_loss, "_CHUNK_ELEMENTS", 7 * 64)


def copy_into_padded(source: GPT, padded: GPT) -> None:
    """Load an unpadded model's weights into a padded one; padded rows get huge values on purpose, so any
    leak of a padded id into logits, loss or sampling shows."""
    state = padded.state_dict()
    for key, value in source.state_dict().items():
        if key in ("tok_emb.weight", "out_head.weight"):
            state[key][: value.size(0)] = value
            state[key][value.size(0) :] = 50.0
        else:
            state[key] = value
    padded.load_state_dict(state)


def loss_and_grads(model: GPT, inputs, targets, autocast: bool) -> tuple[torch.Tensor, dict]:
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model.loss(inputs, targets)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_fast_path_matches_reference_loss_and_gradients(autocast):
    torch.manual_seed(0)
    reference = tiny(attn_impl="manual", fused_loss=False)
    fast = tiny(attn_impl="sdpa", fused_loss=True, vocab_pad_multiple=64)
    copy_into_padded(reference, fast)
    batch = torch.randint(0, VOCAB, (3, 17))
    inputs, targets = batch[:, :-1], batch[:, 1:].clone()
    targets[0, 3] = -100  # ignored targets are skipped by both paths
    ref_loss, ref_grads = loss_and_grads(reference, inputs, targets, autocast)
    fast_loss, fast_grads = loss_and_grads(fast, inputs, targets, autocast)
    tol = 2e-2 if autocast else 1e-5
    assert torch.allclose(fast_loss, ref_loss, atol=tol, rtol=0)
    assert torch.allclose(
        fast_loss, F.cross_entropy(reference(inputs).flatten(0, 1), targets.flatten()), atol=tol
    )
    for name, grad in ref_grads.items():
        fast_grad = (
            fast_grads[name][: grad.size(0)]
            if name in ("tok_emb.weight", "out_head.weight")
            else fast_grads[name]
        )
        scale = grad.abs().max().item()
        assert torch.allclose(fast_grad, grad, atol=tol * max(scale, 1e-3), rtol=0), name
    # The padded rows take no part: no gradient reaches them from the loss.
    assert torch.count_nonzero(fast_grads["out_head.weight"][VOCAB:]) == 0


def test_training_in_bf16_on_a_cpu_computes_the_attention_of_short_rows_in_float32(monkeypatch):
    """torch 2.13's CPU flash-attention backward in bfloat16 is 2-3x slower than in float32 at short rows
    (make train's 64 tokens x 32 dimensions a head: its bf16 steps were slower than fp32). Only training takes
    float32 there; inference, and rows of 256 x 64 or more, stay in bfloat16."""
    dtypes = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, **options):
        dtypes.append(q.dtype)
        return sdpa(q, k, v, **options)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    torch.manual_seed(0)
    model = tiny(attn_impl="sdpa")
    inputs = torch.randint(0, VOCAB, (2, 16))
    loss_and_grads(model, inputs, inputs, autocast=True)
    assert dtypes and set(dtypes) == {torch.float32}
    dtypes.clear()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(inputs)
    assert dtypes and set(dtypes) == {torch.bfloat16}

    def rows(tokens: int, head_dim: int, dtype=torch.bfloat16) -> torch.Tensor:
        return torch.zeros(2, 4, tokens, head_dim, dtype=dtype)

    assert float32_attention_is_faster(rows(64, 32)) and float32_attention_is_faster(rows(128, 64))
    assert not float32_attention_is_faster(rows(256, 64)) and not float32_attention_is_faster(rows(1024, 32))
    assert not float32_attention_is_faster(rows(64, 32, torch.float32))


def test_padded_ids_are_never_predicted_or_sampled():
    torch.manual_seed(0)
    model = tiny(vocab_pad_multiple=128).eval()
    copy_into_padded(tiny(), model)  # padded head rows of 50.0 would win every argmax if they leaked
    assert model.out_head.weight.shape[0] == 128 and model.cfg.padded_vocab_size == 128
    idx = torch.randint(0, VOCAB, (4, 5))
    with torch.no_grad():
        assert model(idx).shape == (4, 5, VOCAB)
        assert model(idx, last_only=True).shape == (4, 1, VOCAB)
        for options in ({"temperature": 0.0}, {"temperature": 5.0}, {"temperature": 5.0, "top_p": 0.99}):
            out = generate(model, idx, max_new_tokens=10, context_length=16, **options)
            assert out.max() < VOCAB, options
        beams = generate(model, idx[:1], max_new_tokens=6, context_length=16, num_beams=3)
        assert beams.max() < VOCAB


def test_bias_false_removes_every_bias_and_exports_zero_biases():
    model = tiny(bias=False, qkv_bias=False)
    assert not [name for name, _ in model.named_parameters() if name.endswith(".bias")]
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in tiny().parameters())
    state = hf_state_dict_from_gpt(tiny(bias=False, vocab_pad_multiple=64))
    assert torch.count_nonzero(state["transformer.h.0.ln_1.bias"]) == 0
    assert torch.count_nonzero(state["transformer.h.0.mlp.c_fc.bias"]) == 0
    assert state["transformer.wte.weight"].shape[0] == VOCAB  # padding cut off in the export
    assert state["lm_head.weight"].shape[0] == VOCAB


def test_padding_must_be_a_positive_integer():
    with pytest.raises(ConfigError, match="vocab_pad_multiple"):
        tiny(vocab_pad_multiple=0)


class FakeTrainer:
    def __init__(self, precision: str, gradient_clip_val: float | None):
        self.precision, self.gradient_clip_val = precision, gradient_clip_val
        self.strategy = None


def test_adamw_kernel_is_fused_wherever_lightning_allows_it():
    assert adamw_kernel(None, FakeTrainer("bf16-mixed", 1.0)) == {"fused": True}
    assert adamw_kernel(None, FakeTrainer("16-mixed", 1.0)) == {}  # Lightning unscales to clip
    assert adamw_kernel(None, FakeTrainer("16-mixed", None)) == {"fused": True}
    assert adamw_kernel(False, FakeTrainer("bf16-mixed", 1.0)) == {"fused": False}
    with pytest.raises(
        ConfigError, match="optim.fused=true cannot be combined with trainer.precision=16-mixed"
    ):
        adamw_kernel(True, FakeTrainer("16-mixed", 1.0))


class ClippedNorm(L.Callback):
    """The gradient norm after clipping and the step, read when the Trainer zeroes the gradients (at the start
    of the next step, so a 3-step run shows steps 1 and 2)."""

    def __init__(self):
        self.norms: list[float] = []

    def on_before_zero_grad(self, trainer, pl_module, optimizer):
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if grads:
            self.norms.append(torch.nn.utils.get_total_norm(grads).item())


def test_lightning_clips_with_the_norm_it_logs_and_uses_fused_adamw():
    torch.manual_seed(0)
    module = LanguageModelModule(
        model={
            "_target_": "gptlab.models.GPT",
            "vocab_size": VOCAB,
            "context_length": 16,
            "emb_dim": 32,
            "n_heads": 4,
            "n_layers": 2,
            "drop_rate": 0.0,
            "vocab_pad_multiple": 64,
        },
        tokenizer={"kind": "gpt2"},
        optim={"lr": 1e-3},
        scheduler={"name": "constant"},
    )
    batches = [(t[:, :-1], t[:, 1:]) for t in torch.randint(0, VOCAB, (3, 4, 17))]
    clipped = ClippedNorm()
    trainer = quiet_trainer(
        max_steps=3,
        gradient_clip_val=1e-3,
        precision="bf16-mixed",
        limit_val_batches=0,
        callbacks=[clipped],
    )
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    assert trainer.optimizers[0].defaults["fused"] is True
    assert module._grad_norm.item() > 1e-2  # the unclipped norm is far above the clip value...
    assert len(clipped.norms) == 2 and max(clipped.norms) <= 1e-3 * 1.01  # ...and every step was clipped


def test_compiled_model_keeps_its_parameter_names_and_outputs():
    torch.manual_seed(0)
    model = tiny(vocab_pad_multiple=64)
    names = list(model.state_dict())
    batch = torch.randint(0, VOCAB, (2, 9))
    eager_loss = model.loss(batch[:, :-1], batch[:, 1:])
    compile_model(model)
    assert list(model.state_dict()) == names  # no _orig_mod. prefix anywhere
    assert torch.allclose(model.loss(batch[:, :-1], batch[:, 1:]), eager_loss, atol=1e-5)


def test_train_with_compile_true_writes_plain_checkpoints_that_generate(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(
        run_dir, "model=gpt_tiny", "data=shakespeare_char", *TINY_RUN, "logger=csv", "compile=true"
    )
    assert_ok(result)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    keys = list(load_checkpoint_safely(str(ckpt))["state_dict"])
    assert keys and not [k for k in keys if "_orig_mod" in k]
    generated = run_script(
        "generate.py", f"ckpt_path={ckpt}", "prompt=ROMEO:", "max_new_tokens=8", "temperature=0"
    )
    assert_ok(generated)
    assert generated.stdout.startswith("ROMEO:")


def test_checkpoints_from_a_torch_compile_wrapper_load_without_the_prefix():
    # torch.compile(model) (as nanoGPT and others save it) prefixes every key with _orig_mod.
    model = tiny()
    wrapped = {f"model._orig_mod.{key}": value for key, value in model.state_dict().items()}
    again = tiny()
    again.load_state_dict(model_state_dict({"state_dict": wrapped}))
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
