"""A note, before the first step, when each validation would take longer than the training between two.

Validation scores the whole validation split by default (``trainer.limit_val_batches=1.0``): right for the
presets, whose splits are small, but a corpus of your own holds out ``data.val_ratio`` of itself, and a tenth
of 1 GB of text (30.4M GPT-2 tokens in make bench-data's corpus) is 14,800 batches of 8 x 256: each validation
longer than a short run's training.
The note says so with the setting that bounds it; nothing changes without it (the numbers stay those of the
whole split).
"""

from __future__ import annotations

import math
import sys

import lightning as L

# A forward pass costs about a third of a training step (forward and backward): validation takes about as
# long as the training between two once it has three times as many batches.
FORWARD_SHARE = 3
# The batches to suggest scoring instead: nanoGPT estimates its losses on 200 batches (eval_iters).
SUGGESTED_BATCHES = 200


class ValidationCostNote(L.Callback):
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not trainer.enable_validation or trainer.limit_val_batches == 0:
            return
        batches, loaders = validation_batches(trainer)
        note = validation_cost_note(batches, training_batches_between(trainer), loaders)
        if note:
            print(note, file=sys.stderr, flush=True)


def validation_batches(trainer: L.Trainer) -> tuple[int, int]:
    """(batches one validation scores on this rank, after trainer.limit_val_batches; its loaders: a mixture
    has one per source, and the limit applies to each)."""
    loaders = trainer.val_dataloaders
    if loaders is None:  # not set up yet (no sanity check ran): the data module's own
        loaders = trainer.datamodule.val_dataloader() if trainer.datamodule is not None else []
    loaders = loaders if isinstance(loaders, list | tuple) else [loaders]
    limit = trainer.limit_val_batches
    total = 0
    for loader in loaders:
        batches = len(loader)
        total += min(batches, int(limit)) if isinstance(limit, int) else int(batches * limit)
    return total, len(loaders)


def training_batches_between(trainer: L.Trainer) -> int:
    """Training batches from one validation to the next, or to the run's end when that comes first."""
    between = trainer.val_check_batch
    if isinstance(between, float) and math.isinf(between):
        return 0  # no validation during training: nothing to compare with
    between = int(between)
    if between >= trainer.num_training_batches and trainer.check_val_every_n_epoch:
        between *= trainer.check_val_every_n_epoch
    if trainer.max_steps > 0:
        left = (trainer.max_steps - trainer.global_step) * trainer.accumulate_grad_batches
        between = min(between, max(left, 1))
    return between


def validation_cost_note(val_batches: int, between: int, loaders: int = 1) -> str | None:
    if between <= 0 or val_batches <= FORWARD_SHARE * between:
        return None
    # Then a validation costs at most about a third of the training between two (the limit is per loader).
    suggested = max(min(SUGGESTED_BATCHES, between) // loaders, 1)
    each = f"of each of the {loaders} sources " if loaders > 1 else ""
    return (
        f"note: each validation scores {val_batches:,} batches of the validation split, {val_batches / between:.0f}x "
        f"the {between:,} training batches run between validations, and takes longer than them (a validation "
        f"batch costs about a third of a training one); trainer.limit_val_batches={suggested} scores the first "
        f"{suggested} {each}each time (1.0, the default, scores the whole split)"
    )
