"""The LightningModule: next-token cross-entropy training of any gptlab model.

Hyperparameters are kept as plain dicts (no OmegaConf objects, no partials), so checkpoints load with
torch.load(weights_only=True).
"""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn
from torchmetrics import MeanMetric

from gptlab.data.tokenizers import tokenizer_from_spec
from gptlab.errors import ConfigError
from gptlab.schedules import build_scheduler


def build_model(model_cfg: dict) -> nn.Module:
    """Instantiate a model from its config dict (``_target_`` plus constructor arguments)."""
    return instantiate(dict(model_cfg), _convert_="all")


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only: biases, LayerNorm gains and other vectors are not decayed."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


class LanguageModelModule(L.LightningModule):
    def __init__(self, model: dict, tokenizer: dict, optim: dict | None = None, scheduler: dict | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.model = build_model(model)
        self.tokenizer = tokenizer_from_spec(tokenizer)
        self.optim_cfg = dict(optim or {})
        self.scheduler_cfg = dict(scheduler or {"name": "constant"})
        self.val_loss = MeanMetric()
        self.tokens_seen = 0
        self.best_val_loss = math.inf

    @property
    def context_length(self) -> int:
        return self.model.context_length

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        inputs, targets = batch
        logits = self.model(inputs)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.tokens_seen += batch[0].numel() * self.trainer.world_size
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/ppl", torch.exp(loss.detach()))
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        self.log("tokens_seen", float(self.tokens_seen))
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        # Weighted by token count, so the epoch value is the mean over every validation token even when
        # the last batch is smaller; MeanMetric also averages correctly across DDP ranks.
        self.val_loss.update(self.loss(batch), weight=batch[1].numel())

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self.val_loss.reset()
            return
        val_loss = self.val_loss.compute()
        self.val_loss.reset()
        self.best_val_loss = min(self.best_val_loss, val_loss.item())
        self.log("val/loss", val_loss, prog_bar=True)
        # Perplexity of the whole validation set: exp of its mean loss, not a mean of batch perplexities.
        self.log("val/ppl", torch.exp(val_loss))

    def configure_optimizers(self):
        lr = float(self.optim_cfg.get("lr", 3e-4))
        weight_decay = float(self.optim_cfg.get("weight_decay", 0.1))
        if lr <= 0:
            raise ConfigError(f"optim.lr must be positive, got {lr}")
        optimizer = torch.optim.AdamW(
            decay_groups(self.model, weight_decay),
            lr=lr,
            betas=tuple(self.optim_cfg.get("betas", (0.9, 0.95))),
            eps=float(self.optim_cfg.get("eps", 1e-8)),
        )
        scheduler = build_scheduler(optimizer, self.scheduler_cfg, self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["tokens_seen"] = self.tokens_seen

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.tokens_seen = int(checkpoint.get("tokens_seen", 0))
