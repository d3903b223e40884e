"""What a run prints: each of Lightning's lines once, no warning about Lightning's own code or about what a
resume is meant to find, no advert, no note of Lightning's to itself.

``import lightning`` gives the ``lightning`` logger a console handler of its own (stderr, "INFO: ...") and
lets its records propagate as well. Under Hydra, whose root logger prints to the console (stdout) and writes
the run's train.log, every Lightning line ("Seed set to", "GPU available", the model summary, "Trainer.fit
stopped") was printed twice (Lightning issue #4621, Hydra issue #2898). Where the root logger has a console,
Lightning's own is dropped: its lines are printed once, and still reach train.log.
"""

from __future__ import annotations

import logging
import warnings


def one_console_for_lightning() -> None:
    if not any(_is_console(handler) for handler in logging.getLogger().handlers):
        return  # logging left unconfigured (hydra/job_logging=disabled): Lightning's console is the only one
    lightning_logger = logging.getLogger("lightning")
    for handler in list(lightning_logger.handlers):
        if _is_console(handler):
            lightning_logger.removeHandler(handler)


def _is_console(handler: logging.Handler) -> bool:
    # A FileHandler is a StreamHandler too (train.log); a console handler writes to stdout or stderr.
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


def hide_lightnings_pytree_deprecation() -> None:
    """Lightning 2.6.6 builds torch's deprecated ``LeafSpec()`` (Lightning issue #21326) and torch 2.13 warns
    once a run, a FutureWarning about Lightning's code that a user cannot act on. Only that warning, only
    from that module, is hidden."""
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
    )


# Lines of Lightning's about Lightning, not the run: adverts for its cloud logger, printed in every run that
# has no LitLogger (logger_connector.py, an unconditional ``rank_zero_info``), and for litmodels, printed
# when Lightning adds its own ModelCheckpoint (callbacks=none, callback_connector.py), and a note that the Trainer
# will not add its default ModelSummary beside the one callbacks/default.yaml configures (callback_connector),
# and that a batch limit of 1.0 uses all batches.
_LIGHTNING_NOISE = (
    "💡 Tip: For seamless cloud logging",
    "💡 Tip: For seamless cloud uploads",
    "Trainer already configured with model summary callbacks",
    # conf/trainer's default limits, as Lightning takes them anyway; its note on `=1` (one batch) still prints.
    "`Trainer(limit_train_batches=1.0)` was configured so 100%",
    "`Trainer(limit_val_batches=1.0)` was configured so 100%",
)


class _NoLightningNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_LIGHTNING_NOISE)


def hide_lightnings_notes_to_itself() -> None:
    """No setting turns the lines of _LIGHTNING_NOISE off; they say nothing about the run, so those messages
    are dropped; every other line of the logger still prints."""
    rank_zero_logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoLightningNoise) for f in rank_zero_logger.filters):
        rank_zero_logger.addFilter(_NoLightningNoise())


def hide_checkpoint_folder_warning() -> None:
    """Resuming a run in its own folder, Lightning warns "Checkpoint directory ... exists and is not empty":
    the checkpoints there are the ones the run resumes from (a fresh run over checkpoints is refused before
    Lightning starts, gptlab.training.preflight). Only for a resumed run, only that warning."""
    warnings.filterwarnings(
        "ignore",
        message=r"Checkpoint directory .* exists and is not empty",
        category=UserWarning,
        module=r"lightning\.pytorch\.callbacks\.model_checkpoint",
    )
