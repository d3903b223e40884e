"""The GPU path on a real CUDA device: mixed precision, compile, the fused loss, decoding, FSDP, resume.

Marked ``gpu`` and skipped where PyTorch sees no CUDA device (CPU-only CI). On a machine with an NVIDIA
GPU: ``make test-gpu`` (these alone) or ``make test`` (the whole suite, these included).
"""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from cli_runner import TINY_RUN, assert_ok, read_metrics, run_train
from torch.utils.data import DataLoader
from trainers import quiet_trainer

from gptlab.data.datamodule import TextDataModule
from gptlab.generation.decoding import generate
from gptlab.models.compile import compile_model
from gptlab.models.fused_loss import IGNORE_INDEX, linear_cross_entropy
from gptlab.models.gpt import GPT
from gptlab.training.module import LanguageModelModule
from gptlab.training.throughput import ThroughputLogger

pytestmark = [
    pytest.mark.gpu,
    # `make test` runs tests on several workers at once (pytest-xdist): these stay on one, one at a time on the GPU
    pytest.mark.xdist_group("gpu"),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SMALL_GPT = {
    "_target_": "gptlab.models.GPT",
    "vocab_size": 50257,
    "context_length": 64,
    "emb_dim": 128,
    "n_heads": 4,
    "n_layers": 2,
    "drop_rate": 0.0,
}
SMALL_DECODER = {**SMALL_GPT, "_target_": "gptlab.models.TransformerDecoderLM"}  # the same shape
MODELS = {"gpt": SMALL_GPT, "decoder": SMALL_DECODER}
STEPS = 20


@pytest.fixture(scope="module")
def batches(data_dir) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first training batches of Tiny Shakespeare (GPT-2 tokens, windows of 64): the same for every run."""
    datamodule = TextDataModule(corpus="tinyshakespeare", data_dir=str(data_dir), batch_size=8, max_length=64)
    datamodule.setup("fit")
    torch.manual_seed(0)
    loader = iter(datamodule.train_dataloader())
    return [next(loader) for _ in range(STEPS)]


class Curve(L.Callback):
    """The loss of every step, and the gradient norm the module logs (before clipping, unscaled)."""

    def __init__(self):
        self.losses: list[float] = []
        self.grad_norms: dict[int, float] = {}  # by step: 16-mixed logs none for a step its scaler skips

    def setup(self, trainer, pl_module, stage):
        log = pl_module.log

        def log_and_keep(name, value, *args, **kwargs):
            if name == "grad_norm":
                self.grad_norms[pl_module.global_step] = float(value)
            return log(name, value, *args, **kwargs)

        pl_module.log = log_and_keep

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def train_curve(model_cfg: dict, batches, precision: str, compile: bool = False, **trainer_args) -> Curve:
    """Train from the same initial weights on ``batches``, one optimizer step each, on the GPU."""
    torch.manual_seed(0)
    module = LanguageModelModule(
        model=model_cfg, tokenizer={"kind": "gpt2"}, optim={"lr": 1e-3}, scheduler={"name": "constant"}
    )
    if compile:
        compile_model(module.model, "cuda")
    curve = Curve()
    trainer = quiet_trainer(
        accelerator="gpu",
        precision=precision,
        max_steps=len(batches),
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[curve],
        **{"gradient_clip_val": 1.0, **trainer_args},
    )
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    assert len(curve.losses) == len(batches)
    return curve


@pytest.fixture(scope="module")
def fp32_curves(batches) -> dict[str, Curve]:
    return {name: train_curve(cfg, batches, "32-true") for name, cfg in MODELS.items()}


# Mixed precision rounds each matmul's inputs to 8 (bf16) or 11 (fp16) significant bits: relative errors
# of about 2^-8 and 2^-11 per operation. The curves may differ by that much, and no more than a few times
# it after 20 steps; a wrong scaler, a skipped step or a loss computed in the wrong dtype differs by far more.
TOLERANCE = {"bf16-mixed": 1e-2, "16-mixed": 2e-3}


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize(
    "precision, clip",
    [("bf16-mixed", 1.0), ("16-mixed", 1.0), ("16-mixed", None)],
    ids=["bf16-mixed", "16-mixed-clipped", "16-mixed-fused-adamw"],
)
def test_mixed_precision_follows_the_fp32_curve(batches, fp32_curves, model, precision, clip):
    """Same loss curve as fp32 to the precision's tolerance, and the same (unscaled) gradient norm.

    16-mixed runs its gradient scaler: with clipping Lightning unscales the gradients itself (AdamW not
    fused); without, fused AdamW unscales inside its step and the logged norm must still be unscaled.
    """
    reference = fp32_curves[model]
    if clip is None:  # the fp32 reference clips at 1.0: compare with an unclipped fp32 run
        reference = train_curve(MODELS[model], batches, "32-true", gradient_clip_val=None)
    curve = train_curve(MODELS[model], batches, precision, gradient_clip_val=clip)
    tolerance = TOLERANCE[precision]
    for step, (ours, ref) in enumerate(zip(curve.losses, reference.losses, strict=True)):
        assert ours == pytest.approx(ref, rel=tolerance), f"step {step}: {precision} {ours} vs fp32 {ref}"
    assert curve.losses[-1] < curve.losses[0] - 1.0  # it trains
    # The scaler's factor (2^16 at the start) must not leak into the logged norm.
    assert curve.grad_norms[0] == pytest.approx(reference.grad_norms[0], rel=5 * tolerance)
    assert len(curve.grad_norms) == STEPS  # no step skipped by the scaler (no overflow at these scales)


def test_compile_follows_the_eager_curve_on_cuda(batches, fp32_curves):
    """compile=true (the blocks through Triton kernels) trains like eager, and keeps plain parameter names."""
    eager = train_curve(SMALL_GPT, batches, "bf16-mixed")
    compiled = train_curve(SMALL_GPT, batches, "bf16-mixed", compile=True)
    for step, (ours, ref) in enumerate(zip(compiled.losses, eager.losses, strict=True)):
        assert ours == pytest.approx(ref, rel=TOLERANCE["bf16-mixed"]), f"step {step}: compiled {ours} vs eager {ref}"
    model = GPT(**{k: v for k, v in SMALL_GPT.items() if k != "_target_"}).cuda()
    names = set(model.state_dict())
    compile_model(model, "cuda")
    assert set(model.state_dict()) == names


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_loss_is_as_exact_as_cross_entropy_under_autocast_on_cuda(dtype):
    """The chunked head + cross-entropy against the plain path under autocast, both measured against the
    exact fp32 computation: padded vocabulary rows and ignored targets included, the loss and both gradients.

    The fused path must be no less exact than the plain one. (In float16 it is far more exact: the plain
    backward's logit gradients, divided by the token count, underflow float16; ours scales after the matmuls.)
    """
    torch.manual_seed(0)
    rows, width, vocab, padded = 1000, 256, 50257, 50304
    hidden = torch.randn(rows, width, device="cuda", requires_grad=True)
    weight = (0.02 * torch.randn(padded, width, device="cuda")).requires_grad_()
    targets = torch.randint(0, vocab, (rows,), device="cuda")
    targets[::7] = IGNORE_INDEX

    def plain_loss():
        return F.cross_entropy(hidden @ weight[:vocab].t(), targets, ignore_index=IGNORE_INDEX)

    with torch.autocast("cuda", dtype=dtype):
        fused = linear_cross_entropy(hidden, weight, targets, vocab_size=vocab)
        plain = plain_loss()
    exact = plain_loss()  # fp32 throughout (TF32 is off unless asked for)
    assert fused.dtype == torch.float32
    assert fused.item() == pytest.approx(exact.item(), rel=1e-3)
    assert abs(fused.item() - exact.item()) <= abs(plain.item() - exact.item()) + 1e-3 * exact.item()
    fused_grads, plain_grads, exact_grads = (torch.autograd.grad(x, (hidden, weight)) for x in (fused, plain, exact))
    for i, name in enumerate(("hidden", "weight")):
        ref = exact_grads[i]
        ours = (fused_grads[i] - ref).norm() / ref.norm()
        theirs = (plain_grads[i] - ref).norm() / ref.norm()
        assert ours < 1e-2 and ours <= 1.5 * theirs, f"grad of {name}: fused error {ours:.2e}, plain {theirs:.2e}"
    assert fused_grads[1][vocab:].abs().max() == 0  # padded rows are never predicted: no gradient


@pytest.mark.parametrize("batch", [1, 4])
def test_kv_cache_decoding_equals_decoding_without_it_on_cuda(batch):
    torch.manual_seed(0)
    model = GPT(**{k: v for k, v in SMALL_GPT.items() if k != "_target_"}).cuda().eval()
    prompt = torch.randint(0, 50257, (batch, 5), device="cuda")
    with torch.inference_mode():
        cached = generate(model, prompt, 40, model.context_length, temperature=0, use_cache=True)
        uncached = generate(model, prompt, 40, model.context_length, temperature=0, use_cache=False)
    assert cached.shape == (batch, 45)
    assert torch.equal(cached, uncached)


def test_throughput_callback_takes_the_gpus_datasheet_peak(tmp_path, batches):
    """Lightning's table of datasheet figures for this GPU, and MFU logged from a real run."""
    from lightning.fabric.utilities.throughput import get_available_flops
    from lightning.pytorch.loggers import CSVLogger

    torch.manual_seed(0)
    module = LanguageModelModule(model=SMALL_GPT, tokenizer={"kind": "gpt2"}, optim={"lr": 1e-3})
    callback = ThroughputLogger(window_size=5)
    trainer = quiet_trainer(
        accelerator="gpu",
        precision="bf16-mixed",
        max_steps=len(batches),
        log_every_n_steps=5,
        logger=CSVLogger(tmp_path, name="csv", version=""),  # where read_metrics looks
        limit_val_batches=0,
        callbacks=[callback],
    )
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    sheet = get_available_flops(torch.device("cuda"), torch.bfloat16)
    assert callback.peak == sheet
    rows = read_metrics(tmp_path)
    tokens = [float(r["throughput/tokens_per_sec"]) for r in rows if r.get("throughput/tokens_per_sec")]
    assert tokens and all(t > 0 for t in tokens)
    if sheet is not None:  # a GPU Lightning's table knows
        mfu = [float(r["throughput/mfu"]) for r in rows if r.get("throughput/mfu")]
        assert mfu and all(0 < m < 1 for m in mfu)


# --- train.py on the GPU, as a user runs it --------------------------------------------------------------

GPU_RUN = [
    "model=gpt_tiny",
    "data=verdict",
    "data.batch_size=4",
    "data.max_length=32",
    "logger=csv",
    "trainer.accelerator=gpu",
    "trainer.max_steps=8",
    "trainer.val_check_interval=4",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "callbacks.text_sample.max_new_tokens=4",
    "validate_after_fit=false",
    "scheduler=constant",
]


def final_weights(run_dir) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")["state_dict"]


def column(run_dir, key: str) -> list[float]:
    return [float(r[key]) for r in read_metrics(run_dir) if r.get(key)]


def test_fsdp_on_one_gpu_ends_with_the_unsharded_weights(tmp_path):
    """trainer=fsdp (blocks sharded, the fused loss in the root unit, clipping by the norm over all shards)
    on one GPU against the same run unsharded: same losses, same gradient norms, same final weights.

    The unsharded run is DDP on one GPU: like FSDP it draws its batches through Lightning's
    DistributedSampler (a single-device run draws them through gptlab's own sampler, in another order).
    fp32, plain AdamW in both (FSDP never takes the fused kernel), and a clip so low that every step clips.
    """
    common = [*GPU_RUN, "trainer.precision=32-true", "optim.fused=false", "trainer.gradient_clip_val=0.05"]
    single, sharded = tmp_path / "ddp", tmp_path / "fsdp"
    assert_ok(run_train(single, *common, "trainer=ddp", "trainer.devices=1"))
    assert_ok(run_train(sharded, *common, "trainer=fsdp", "trainer.devices=1"))
    norms = column(single, "grad_norm")
    assert len(norms) == 8 and min(norms) > 0.05  # clipping was active at every step
    assert column(sharded, "grad_norm") == pytest.approx(norms, rel=1e-4)
    assert column(sharded, "train/loss") == pytest.approx(column(single, "train/loss"), rel=1e-5)
    a, b = final_weights(single), final_weights(sharded)
    assert a.keys() == b.keys()  # FSDP gathers one ordinary checkpoint with the plain names
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-6, msg=name)


def test_resume_on_gpu_continues_the_run(tmp_path):
    """Stopped at step 4 and resumed to 8 on the GPU (dropout on, bf16-mixed): the same data order and RNG,
    so the curve equals the uninterrupted run's to floating-point noise."""
    run = [*GPU_RUN, "model.drop_rate=0.1", "trainer.precision=bf16-mixed", "callbacks.last_checkpoint.every_n_train_steps=1"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert_ok(run_train(whole, *run))
    assert_ok(run_train(parts, *run, "trainer.max_steps=4"))
    assert_ok(run_train(parts, *run, "ckpt_path=last"))
    assert column(parts, "train/loss") == pytest.approx(column(whole, "train/loss"), rel=1e-4)
    assert column(parts, "val/loss") == pytest.approx(column(whole, "val/loss"), rel=1e-4)
    a, b = final_weights(parts), final_weights(whole)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-3, atol=1e-5, msg=name)


def test_compile_and_16_mixed_runs_of_train_py_on_gpu(tmp_path):
    """compile=true with the gradient scaler of 16-mixed, end to end: finite losses, plain checkpoint names."""
    run_dir = tmp_path / "run"
    assert_ok(run_train(run_dir, *GPU_RUN, "compile=true", "trainer.precision=16-mixed"))
    losses = column(run_dir, "train/loss")
    assert len(losses) == 8 and all(math.isfinite(loss) for loss in losses)
    assert not any("_orig_mod" in name for name in final_weights(run_dir))


def test_tiny_smoke_run_picks_the_gpu_by_itself(tmp_path):
    """accelerator=auto (the default) trains on the GPU when there is one."""
    result = run_train(tmp_path / "run", *TINY_RUN, "logger=csv")
    assert_ok(result)
    assert "GPU available: True (cuda), used: True" in result.stdout + result.stderr
