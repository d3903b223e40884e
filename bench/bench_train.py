"""Training throughput, side by side in one run: our GPT under the Lightning Trainer, our GPT in a bare
PyTorch loop, and transformers' GPT2LMHeadModel of the same shape in the same bare loop, in fp32 and
bf16-mixed (autocast). Prints one table: tokens/s, model FLOPs utilisation (MFU) against the matmul peak
measured in the same run, the speed-up over transformers, and Lightning's overhead over the bare loop.

    python bench/bench_train.py                     # 124M and small shapes, window 256, batch 8
    python bench/bench_train.py --shapes small --steps 5 --precisions bf16
    python bench/bench_train.py --compile           # adds compile=true: ours (both loops) and transformers
    python bench/bench_train.py --plain-loss        # adds our GPT with fused_loss=false (F.cross_entropy)
    python bench/bench_train.py --device cuda --window 1024 --shapes 124m --precisions bf16 --compile
    python bench/bench_train.py --profile           # then the top operators of one step of ours (bare loop)
    python bench/bench_train.py --nanogpt ../nanoGPT  # adds the small end: `make train` vs nanoGPT's train.py

bf16 is timed only where the device computes it natively (a CUDA GPU; a CPU with AVX512-BF16 or AMX): a CPU
without either emulates bf16 matmuls many times slower than fp32, and train.py's trainer.precision=auto
trains in fp32 there. ``--precisions bf16`` times it anyway.

Every contender: AdamW (lr 3e-4, wd 0.1, torch's fused kernel, which is also transformers' Trainer default),
gradient clipping 1.0, dropout 0, the same pre-made batches of random tokens. Ours is the repo's default
fast path (SDPA attention, fused head + cross-entropy, vocabulary padded to 50304), with biases and a tied
head like GPT-2. All contenders stay in memory and take turns in ``--rounds`` rounds (order A B C, then
C B A), each round one warm-up step and then timed steps, ``--steps`` timed in all; a step's time is the
median over the timed steps (robust to the odd slow step on a shared machine). MFU counts the model's FLOPs (6 N + 12 L d T per token,
the unpadded vocabulary) for every contender, so MFU ratios equal speed ratios. The peak is the best
matmul rate measured in the same run on the same device; on a GPU the datasheet figure (Lightning's table)
is printed beside it, as the MFU papers quote.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
import transformers
from torch.utils.data import DataLoader

from gptlab.core.devices import fastest_precision
from gptlab.models.compile import compile_model
from gptlab.models.flops import measure_peak_flops, model_flops_per_token, peak_flops
from gptlab.models.gpt import GPT
from gptlab.training.module import LanguageModelModule, decay_groups

REPO = Path(__file__).resolve().parents[1]
VOCAB = 50257
SHAPES = {
    "124m": dict(n_embd=768, n_layer=12, n_head=12),
    "small": dict(n_embd=384, n_layer=6, n_head=6),
    # `make train`'s model (nanoGPT's CPU setting): characters, block 64, batch 12, plain cross-entropy as
    # experiment=shakespeare_char sets it; here per-step overhead weighs most.
    "char": dict(n_embd=128, n_layer=4, n_head=4, vocab=65, window=64, batch=12, fused_loss=False),
}
ARCHITECTURE = ("n_embd", "n_layer", "n_head")


def shape_window(shape: dict, args) -> tuple[int, int, int]:
    """(vocabulary, window, batch) of a shape: its own, else GPT-2's vocabulary and --window, --batch."""
    return shape.get("vocab", VOCAB), shape.get("window", args.window), shape.get("batch", args.batch)
PRECISIONS = {"fp32": ("32-true", torch.float32), "bf16": ("bf16-mixed", torch.bfloat16)}


def our_model_config(shape: dict, window: int) -> dict:
    """The GPT config of train.py's model=gpt124m defaults, at GPT-2's shape (biases, tied head)."""
    return dict(
        _target_="gptlab.models.GPT",
        vocab_size=shape.get("vocab", VOCAB),
        context_length=window,
        emb_dim=shape["n_embd"],
        n_heads=shape["n_head"],
        n_layers=shape["n_layer"],
        drop_rate=0.0,
        qkv_bias=True,
        bias=True,
        tie_weights=True,
        vocab_pad_multiple=64,
        attn_impl="sdpa",
        fused_loss=shape.get("fused_loss", True),
    )


def hf_model(shape: dict, window: int) -> transformers.GPT2LMHeadModel:
    config = transformers.GPT2Config(
        vocab_size=shape.get("vocab", VOCAB), n_positions=window, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        **{k: shape[k] for k in ARCHITECTURE},
    )
    return transformers.GPT2LMHeadModel(config)


def adamw(params) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=3e-4, weight_decay=0.1, betas=(0.9, 0.95), fused=True)


LIGHTNING = "ours, Lightning"
LIGHTNING_COMPILED = "ours, Lightning, compile=true"
BARE_COMPILED = "ours, bare loop, compile=true"


class BareLoop:
    """One contender in a bare PyTorch loop: forward under autocast, backward, clip, AdamW step."""

    def __init__(self, model, loss_fn, optimizer, autocast):
        self.model, self.loss_fn, self.optimizer, self.autocast = model.train(), loss_fn, optimizer, autocast

    def steps(self, batches) -> list[float]:
        return [self.step(x, y) for x, y in batches]

    def step(self, x, y) -> float:
        synchronize(x.device)
        start = time.perf_counter()
        with self.autocast():
            loss = self.loss_fn(self.model, x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        synchronize(x.device)
        return time.perf_counter() - start


class StepTimer(L.Callback):
    """Seconds from one training batch's start to the next: everything the Trainer does per step."""

    def __init__(self):
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        synchronize(pl_module.device)
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module):
        synchronize(pl_module.device)
        self.starts.append(time.perf_counter())

    def durations(self) -> list[float]:
        return [b - a for a, b in zip(self.starts, self.starts[1:], strict=False)]


class LightningRun:
    """Our GPT under the Trainer; each call to ``steps`` is one ``fit`` over the given batches."""

    def __init__(self, model_cfg: dict, precision: str, device: torch.device, compile: bool = False):
        self.precision, self.device = precision, device
        self.module = LanguageModelModule(
            model=model_cfg,
            tokenizer={"kind": "gpt2"},
            optim={"lr": 3e-4, "weight_decay": 0.1, "betas": (0.9, 0.95), "fused": True},
            scheduler={"name": "constant"},
        )
        if compile:
            compile_model(self.module.model, device.type)  # what train.py does for compile=true

    def steps(self, batches) -> list[float]:
        timer = StepTimer()
        trainer = L.Trainer(
            accelerator="gpu" if self.device.type == "cuda" else "cpu",
            devices=1,
            precision=self.precision,
            max_steps=len(batches),
            gradient_clip_val=1.0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            callbacks=[timer],
        )
        trainer.fit(self.module, train_dataloaders=DataLoader(batches, batch_size=None))  # items are batches
        return timer.durations()


def ours_bare(model_cfg: dict, autocast, device: torch.device, compile: bool = False) -> BareLoop:
    model = GPT(**{k: v for k, v in model_cfg.items() if k != "_target_"}).to(device)
    if compile:
        compile_model(model, device.type)
    optimizer = adamw(decay_groups(model, 0.1))  # the same parameter groups LanguageModelModule builds
    return BareLoop(model, lambda m, x, y: m.loss(x, y), optimizer, autocast)


def hf_bare(shape: dict, window: int, autocast, device: torch.device, compile: bool = False) -> BareLoop:
    model = hf_model(shape, window).to(device)
    if compile:
        model.compile()  # the whole forward, as transformers' Trainer does with torch_compile=True
    loss_fn = lambda m, x, y: F.cross_entropy(m(input_ids=x).logits.flatten(0, 1), y.flatten())  # noqa: E731
    return BareLoop(model, loss_fn, adamw(model.parameters()), autocast)


def run_row(shape_name: str, precision_name: str, args, batches) -> dict[str, float]:
    """Median seconds per step of every contender on the same batches.

    All contenders stay in memory and take turns in rounds (A B C, then C B A, ...), each round a warm-up
    step and then timed steps: a slow spell of a shared machine lands on every contender, not on one.
    """
    shape = SHAPES[shape_name]
    _, window, _ = shape_window(shape, args)
    lightning_precision, dtype = PRECISIONS[precision_name]
    device = torch.device(args.device)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype != torch.float32 else nullcontext
    model_cfg = our_model_config(shape, window)
    gc.collect()  # free the previous row's models (Lightning keeps reference cycles)
    torch.manual_seed(0)
    contenders = {
        LIGHTNING: LightningRun(model_cfg, lightning_precision, device),
        "ours, bare loop": ours_bare(model_cfg, autocast, device),
        "transformers, bare loop": hf_bare(shape, window, autocast, device),
    }
    if args.plain_loss:
        plain = {**model_cfg, "fused_loss": False}
        contenders["ours, bare loop, fused_loss=false"] = ours_bare(plain, autocast, device)
    if args.compile:
        contenders[LIGHTNING_COMPILED] = LightningRun(model_cfg, lightning_precision, device, compile=True)
        contenders[BARE_COMPILED] = ours_bare(model_cfg, autocast, device, compile=True)
        contenders["transformers, bare loop, compile"] = hf_bare(shape, window, autocast, device, compile=True)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    per_round = len(batches) // args.rounds
    for round_index in range(args.rounds):
        order = list(contenders) if round_index % 2 == 0 else list(reversed(contenders))
        round_batches = batches[round_index * per_round : (round_index + 1) * per_round]
        for name in order:
            times[name] += contenders[name].steps(round_batches)[1:]  # the first step of a round warms up
    if args.profile:
        name = BARE_COMPILED if args.compile else "ours, bare loop"
        profile_steps(name, contenders[name], batches[:4], device)
    return {name: statistics.median(t) for name, t in times.items()}


def profile_steps(name: str, contender: BareLoop, batches, device: torch.device) -> None:
    """Where one contender's step time goes: the operators that take the most time over a few steps."""
    from torch.profiler import ProfilerActivity, profile

    contender.steps(batches[:1])  # warm
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        contender.steps(batches[1:])
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"\nprofile of {name}, {len(batches) - 1} steps, by {sort_by}:")
    print(prof.key_averages().table(sort_by=sort_by, row_limit=25, max_name_column_width=60), flush=True)


def native_bf16(device: torch.device) -> bool:
    """Whether train.py's trainer.precision=auto would train in bf16 here."""
    return fastest_precision(device.type)[0] == "bf16-mixed"


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a step's time is its real duration (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--precisions", nargs="+", choices=list(PRECISIONS), help="default: fp32, and bf16 where native")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per contender, over all rounds")
    parser.add_argument("--rounds", type=int, default=5, help="turns each contender takes (order alternates)")
    parser.add_argument(
        "--device", default="cpu", help="cpu, or cuda (the peak is then the datasheet figure)"
    )
    parser.add_argument("--compile", action="store_true", help="also time ours and transformers compiled")
    parser.add_argument("--plain-loss", action="store_true", help="also time ours with fused_loss=false")
    parser.add_argument("--profile", action="store_true", help="print the top operators of ours (bare loop)")
    parser.add_argument("--nanogpt", type=Path, help="a nanoGPT checkout: adds `make train` against its train.py")
    parser.add_argument("--small-rounds", type=int, default=1, help="runs of each at the small end (order alternates)")
    parser.add_argument("--data-dir", default=os.environ.get("GPTLAB_DATA_DIR", str(REPO / "data")))
    args = parser.parse_args()
    if not args.precisions:
        args.precisions = ["fp32", "bf16"] if native_bf16(torch.device(args.device)) else ["fp32"]
    transformers.logging.set_verbosity_error()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # keep the table readable

    device = torch.device(args.device)
    peaks, datasheet = {}, {}
    for name, (precision, dtype) in PRECISIONS.items():
        if name in args.precisions:
            peaks[name] = measure_peak_flops(dtype, device)
            if device.type == "cuda":  # Lightning's table of datasheet figures (None for an unknown GPU)
                datasheet[name] = peak_flops(device, precision, None)
    print(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, torch {torch.__version__}, "
        f"lightning {L.__version__}, transformers {transformers.__version__}; window {args.window}, "
        f"batch {args.batch} (char: 64, 12), median of {args.steps} steps in {args.rounds} rounds"
    )
    print("measured matmul peak: " + ", ".join(f"{k} {v / 1e12:.2f} TFLOP/s" for k, v in peaks.items()))
    if datasheet:
        print("datasheet peak: " + ", ".join(f"{k} {v / 1e12:.2f} TFLOP/s" for k, v in datasheet.items() if v))
    print()
    with_datasheet = any(datasheet.values())
    print("| shape | precision | contender | tokens/s | MFU | " + ("MFU (datasheet) | " * with_datasheet) + "vs transformers |")
    print("|---|---|---|---:|---:|" + ("---:|" * with_datasheet) + "---:|")
    for shape_name in args.shapes:
        torch.manual_seed(0)
        vocab, window, batch = shape_window(SHAPES[shape_name], args)
        tokens_per_step = window * batch
        batches = [
            (lambda t: (t[:, :-1], t[:, 1:]))(torch.randint(0, vocab, (batch, window + 1)).to(args.device))
            for _ in range(args.steps + args.rounds)  # one warm-up step per round
        ]
        flops = model_flops_per_token(hf_model(SHAPES[shape_name], window), window)
        for precision_name in args.precisions:
            seconds = run_row(shape_name, precision_name, args, batches)
            reference = seconds["transformers, bare loop"]
            for name, s in seconds.items():
                tokens = tokens_per_step / s
                mfu = f"{100 * tokens * flops / peaks[precision_name]:.1f}% | "
                if with_datasheet:
                    sheet = datasheet.get(precision_name)
                    mfu += f"{100 * tokens * flops / sheet:.1f}% | " if sheet else "- | "
                print(
                    f"| {shape_name} | {precision_name} | {name} | {tokens:,.0f} | {mfu}{reference / s:.2f}x |",
                    flush=True,
                )
            blank = "| " * with_datasheet
            pairs = [(LIGHTNING, "ours, bare loop"), (LIGHTNING_COMPILED, BARE_COMPILED)]
            for lightning, bare in pairs:
                if lightning in seconds:
                    overhead = seconds[lightning] / seconds[bare] - 1
                    print(
                        f"| {shape_name} | {precision_name} | {lightning}: overhead vs bare loop | | {blank}"
                        f"| {100 * overhead:+.1f}% |",
                        flush=True,
                    )
    if args.nanogpt:
        small_end(args, peaks.get("fp32"))
    else:
        print("\n(the small end, `make train` against nanoGPT's train.py, needs a nanoGPT checkout: --nanogpt PATH)")


def small_end(args, fp32_peak: float | None) -> None:
    """`make train` against nanoGPT's train.py with its CPU setting, whole commands (see nanogpt_small_end)."""
    from nanogpt_small_end import compare  # bench/ is on sys.path when this script runs

    flops = model_flops_per_token(hf_model(SHAPES["char"], 64), 64)
    print(f"\nthe small end, whole commands, {args.small_rounds} run(s) each (medians):\n")
    print("| shape | precision | contender | val loss (whole split) | best val (its own) | wall time | step | "
          "MFU (whole run) | vs nanoGPT |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for row in compare(args.nanogpt, Path(args.data_dir), args.small_rounds, [], fp32_peak, flops):
        print(row, flush=True)


if __name__ == "__main__":
    main()
