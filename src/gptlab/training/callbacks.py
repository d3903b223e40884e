"""Callbacks of our own; everything else comes from Lightning (checkpointing, summaries, ...)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only

from gptlab.core.errors import ConfigError
from gptlab.core.files import append_text
from gptlab.data.tokenizers import UnknownCharacters
from gptlab.generation.decoding import generate, notice_once, start_ids
from gptlab.training.distributed import is_sharded

# The prompt of the text samples when none is set: the opening of "The Verdict" (the book's own prompt).
DEFAULT_PROMPT = "Every effort moves you"


class TextSampleCallback(L.Callback):
    """After each validation, continue a fixed prompt and print, save and log the text.

    Sampling draws from its own generator, seeded by the step, so it never shifts the training RNG:
    a run with samples trains exactly like one without. With no ``prompt`` set, samples continue
    DEFAULT_PROMPT, or, where a character vocabulary lacks some of its characters (a corpus of your own),
    start where generate.py starts without a prompt, and say so once.
    """

    def __init__(
        self,
        prompt: str | None = None,
        max_new_tokens: int = 50,
        temperature: float = 0.8,
        top_k: int | None = 50,
        output_file: str | None = None,
        seed: int = 0,
    ):
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_k = top_k
        self.output_file = Path(output_file) if output_file else None
        self.seed = seed
        self.rows: list[list] = []  # [step, text] of every sample so far (the wandb table)
        self.prompt_ids: list[int] | None = None  # settled by check_prompt, for the run's tokenizer

    def check_prompt(self, tokenizer) -> None:
        """Settle the prompt's token ids now: a prompt set that the vocabulary cannot encode fails here,
        not at the first validation."""
        if self.prompt is not None:
            try:
                self.prompt_ids = tokenizer.encode(self.prompt)
            except UnknownCharacters as err:
                raise ConfigError(f"callbacks.text_sample.prompt={self.prompt!r}: {err}") from None
            return
        try:
            self.prompt_ids = tokenizer.encode(DEFAULT_PROMPT)
        except UnknownCharacters as err:  # a character vocabulary, from a corpus of the user's own
            self.prompt_ids = start_ids(tokenizer)
            if rank_zero_only.rank == 0:  # every DDP rank settles it; one says so
                notice_once(
                    f"the text samples start from {tokenizer.decode(self.prompt_ids)!r}: the default prompt "
                    f"{DEFAULT_PROMPT!r} has characters ({err.chars!r}) that this corpus's vocabulary lacks; "
                    "set callbacks.text_sample.prompt= to choose one"
                )

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check_prompt(pl_module.tokenizer)  # train.py checked it before fit; a Trainer of yours may not

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Only while fitting: a stand-alone `trainer.validate` would repeat the last sample.
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING or not trainer.is_global_zero:
            return
        if is_sharded(trainer):  # rank zero alone cannot run a sharded model; generate.py reads the checkpoint
            return
        text = self.sample(pl_module, trainer.global_step)
        val_loss = trainer.callback_metrics.get("val/loss")
        heading = f"step {trainer.global_step}" + (f", val/loss {val_loss:.4f}" if val_loss is not None else "")
        print(f"\n[sample @ {heading}] {text}\n", flush=True)
        if self.output_file:
            append_text(f"--- step {trainer.global_step}\n{text}\n", self.output_file)
        self.rows.append([trainer.global_step, text])
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_metrics({"samples": self._samples_table()}, step=trainer.global_step)

    def _samples_table(self):
        """Every sample of the run so far, one row per validation step: the dashboard shows one growing
        table. MUTABLE (wandb 0.31): each log replaces the table whole; INCREMENTAL logging would need a
        wandb server >= 0.70."""
        import wandb

        return wandb.Table(columns=["step", "text"], data=[list(row) for row in self.rows], log_mode="MUTABLE")

    # The rows travel in checkpoints, so a resumed run's table still starts at its first sample.
    def state_dict(self) -> dict:
        return {"rows": [list(row) for row in self.rows]}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = [list(row) for row in state_dict.get("rows", [])]

    def sample(self, pl_module: L.LightningModule, step: int) -> str:
        tokenizer = pl_module.tokenizer
        if self.prompt_ids is None:
            self.check_prompt(tokenizer)
        prompt = torch.tensor([self.prompt_ids], device=pl_module.device)
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed + step)
        ids = generate(
            pl_module.model,
            prompt,
            max_new_tokens=self.max_new_tokens,
            context_length=pl_module.generation_window,
            temperature=self.temperature,
            top_k=self.top_k,
            eos_id=tokenizer.eos_id,
            generator=generator,
            vocab_size=tokenizer.vocab_size,
        )
        return tokenizer.decode(ids[0].tolist())


class ValidateAtMaxSteps(L.Callback):
    """Validate (and so checkpoint and sample) when a run stops at ``max_steps`` in the middle of an epoch.

    Lightning validates at epoch ends and every ``val_check_interval``; a run cut by ``max_steps`` between
    those would end without a final validation, and its last checkpoint would miss the last steps.
    Asking the loop to stop makes it validate first, as it does for early stopping.
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True


class SourceTokensLogger(L.Callback):
    """Log ``tokens_seen/<source>`` for data that mixes sources (data=mixture): how many training tokens
    the run has taken from each, over all ranks. Other data has one source (``tokens_seen``): nothing to add."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "tokens_by_source"):
            return
        batches_done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        counts = datamodule.tokens_by_source(trainer.current_epoch, batches_done, trainer.world_size)
        for name, tokens in counts.items():
            pl_module.log(f"tokens_seen/{name}", float(tokens), on_step=True, on_epoch=False)
