"""Training throughput, side by side in one run: our GPT under the Lightning Trainer, our GPT in a bare
PyTorch loop, and transformers' GPT2LMHeadModel of the same shape in the same bare loop, in fp32 and
bf16 autocast. Prints tokens/s, model FLOPs utilisation (MFU) against the matmul peak measured in the same
run, and the ratios.

    python bench/bench_train.py                       # 124M and small shapes, window 256, batch 8
    python bench/bench_train.py --shapes small --steps 5

Every contender: AdamW (lr 3e-4, wd 0.1), gradient clipping 1.0, dropout 0, random tokens, one warm-up
step, then ``--steps`` timed steps. This is the baseline for the training-speed work (issue 4); it makes
no claim by itself.
"""

from __future__ import annotations

import argparse
import logging
import platform
import time
from contextlib import nullcontext

import lightning as L
import torch
import torch.nn.functional as F
import transformers
from torch.utils.data import DataLoader

from gptlab.hf_import import gpt_from_hf_model
from gptlab.lit_module import LanguageModelModule

SHAPES = {
    "124m": dict(n_embd=768, n_layer=12, n_head=12),
    "small": dict(n_embd=384, n_layer=6, n_head=6),
}


def measured_peak_flops(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a large square matmul in ``dtype``: the ceiling MFU is measured against on a CPU."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def flops_per_token(n_params: int, n_layer: int, n_embd: int, window: int) -> float:
    """Training FLOPs per token (PaLM appendix B, as nanoGPT counts them): 6 N for the weights (N without the
    position table, which is a lookup; the token table counts once, as the tied output head's matmul)
    plus 12 L d T for attention."""
    return 6 * n_params + 12 * n_layer * n_embd * window


def make_models(shape: dict, window: int):
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_positions=window, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **shape
    )
    hf = transformers.GPT2LMHeadModel(config)
    ours, model_cfg = gpt_from_hf_model(hf, drop_rate=0.0)
    return hf, ours, model_cfg


def bare_loop(model, loss_fn, batches, autocast) -> float:
    """Seconds per step over the timed batches (the first batch warms up)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    model.train()
    for i, (x, y) in enumerate(batches):
        if i == 1:
            start = time.perf_counter()
        with autocast():
            loss = loss_fn(model, x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / (len(batches) - 1)


class StepTimer(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 1:
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        self.seconds_per_step = (time.perf_counter() - self.start) / (trainer.global_step - 1)


def lightning_loop(model_cfg: dict, batches, precision: str) -> float:
    module = LanguageModelModule(model={"_target_": "gptlab.models.GPT", **model_cfg}, tokenizer={"kind": "gpt2"},
                                 optim={"lr": 3e-4, "weight_decay": 0.1}, scheduler={"name": "constant"})
    # The same pre-made batches as the bare loops (batch_size=None: each item is already a batch).
    loader = DataLoader(batches, batch_size=None)
    timer = StepTimer()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, precision=precision, max_steps=len(batches), gradient_clip_val=1.0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0, callbacks=[timer],
    )
    trainer.fit(module, train_dataloaders=loader)
    return timer.seconds_per_step


def ours_loss(model, x, y):
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


def hf_loss(model, x, y):
    return F.cross_entropy(model(input_ids=x).logits.flatten(0, 1), y.flatten())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # keep the table readable

    peaks = {"fp32": measured_peak_flops(torch.float32), "bf16": measured_peak_flops(torch.bfloat16)}
    print(f"{platform.machine()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"transformers {transformers.__version__}; window {args.window}, batch {args.batch}, "
          f"{args.steps} timed steps after 1 warm-up")
    print(f"measured matmul peak: fp32 {peaks['fp32'] / 1e12:.2f} TFLOP/s, bf16 {peaks['bf16'] / 1e12:.2f} TFLOP/s\n")
    print("| shape | precision | contender | tokens/s | MFU | vs transformers |")
    print("|---|---|---|---:|---:|---:|")
    tokens_per_step = args.window * args.batch
    for shape_name in args.shapes:
        shape = SHAPES[shape_name]
        torch.manual_seed(0)
        batches = [
            (lambda t: (t[:, :-1], t[:, 1:]))(torch.randint(0, 50257, (args.batch, args.window + 1)))
            for _ in range(args.steps + 1)
        ]
        for precision, lightning_precision in (("fp32", "32-true"), ("bf16", "bf16-mixed")):
            autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else nullcontext
            hf, ours, model_cfg = make_models(shape, args.window)
            n_params = sum(p.numel() for n, p in ours.named_parameters() if "pos_emb" not in n)
            flops = flops_per_token(n_params, shape["n_layer"], shape["n_embd"], args.window)
            seconds = {
                "ours, Lightning": lightning_loop(model_cfg, batches, lightning_precision),
                "ours, bare loop": bare_loop(ours, ours_loss, batches, autocast),
                "transformers, bare loop": bare_loop(hf, hf_loss, batches, autocast),
            }
            reference = seconds["transformers, bare loop"]
            for name, s in seconds.items():
                tokens = tokens_per_step / s
                mfu = tokens * flops / peaks[precision]
                print(f"| {shape_name} | {precision} | {name} | {tokens:,.0f} | {100 * mfu:.1f}% | {reference / s:.2f}x |")
            overhead = seconds["ours, Lightning"] / seconds["ours, bare loop"] - 1
            print(f"| {shape_name} | {precision} | Lightning overhead vs bare loop | | | {100 * overhead:+.1f}% |")


if __name__ == "__main__":
    main()
