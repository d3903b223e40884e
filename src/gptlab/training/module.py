"""The LightningModule: next-token cross-entropy training of any gptlab model.

Hyperparameters are kept as plain dicts (no OmegaConf objects, no partials), so checkpoints load with
torch.load(weights_only=True).
"""

from __future__ import annotations

import math
import sys
import warnings

import lightning as L
import torch
from hydra.utils import instantiate
from torch import nn
from torchmetrics import MeanMetric

from gptlab.checkpoints.last import kept_checkpoint
from gptlab.compat.lightning import attached_trainer, logs_this_step, optimizer_step_pending
from gptlab.core.errors import ConfigError, TrainingDiverged
from gptlab.data.tokenizers import tokenizer_from_spec
from gptlab.models.fused_loss import IGNORE_INDEX
from gptlab.training.distributed import clip_sharded_gradients, is_sharded, mean_over_ranks, sharded_grad_norm
from gptlab.training.finetune import apply_finetune
from gptlab.training.schedules import build_scheduler, warmup_outlasts_run


def build_model(model_cfg: dict) -> nn.Module:
    """Instantiate a model from its config dict (``_target_`` plus constructor arguments)."""
    return instantiate(dict(model_cfg), _convert_="all")


def decay_groups(model: nn.Module, weight_decay: float, decay: str = "matrices") -> list[dict]:
    """Weight decay on matrices only (GPT-2, nanoGPT): biases, LayerNorm gains and other vectors are not
    decayed. ``decay="all"`` decays every parameter, as torch's AdamW does by default (the book's run)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if decay == "all":
        return [{"params": params, "weight_decay": weight_decay}]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def adamw_kernel(fused: bool | None, trainer: L.Trainer | None) -> dict:
    """AdamW's implementation: ``fused`` (one kernel over every parameter, the fastest on CPU and GPU) or
    torch's default (foreach). ``optim.fused=null`` picks fused wherever Lightning can use it.

    The one case it cannot: 16-mixed with gradient clipping, where Lightning unscales the gradients to clip
    them while a fused optimizer unscales on its own. Sharded (FSDP) parameters keep the default too.
    """
    scaler_clash = trainer is not None and str(trainer.precision) == "16-mixed" and bool(trainer.gradient_clip_val)
    if fused is None:
        return {"fused": True} if not scaler_clash and not (trainer is not None and is_sharded(trainer)) else {}
    if fused and scaler_clash:
        raise ConfigError(
            "optim.fused=true cannot be combined with trainer.precision=16-mixed and gradient clipping "
            "(Lightning must unscale the gradients itself to clip them); set optim.fused=null or false, "
            "or use trainer.precision=bf16-mixed"
        )
    return {"fused": bool(fused)}


def pending_loss_scale(trainer: L.Trainer, optimizer: torch.optim.Optimizer) -> float:
    """The factor the gradients still carry at ``on_before_optimizer_step``: 1 unless float16's gradient
    scaler scaled the loss and left the unscaling to the optimizer (fused AdamW unscales inside ``step()``,
    so Lightning skips its own ``unscale_``; lightning 2.6, plugins/precision/amp.py)."""
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    if scaler is None or not getattr(optimizer, "_step_supports_amp_scaling", False):
        return 1.0
    return float(scaler.get_scale())


class LanguageModelModule(L.LightningModule):
    def __init__(
        self,
        model: dict,
        tokenizer: dict,
        optim: dict | None = None,
        scheduler: dict | None = None,
        finetune: dict | None = None,
        base_model: nn.Module | None = None,
        train_window: int | None = None,
    ):
        """``model`` describes the architecture (it is what checkpoints keep); ``base_model``, when given, is
        that architecture already built with pretrained weights (not saved as a hyperparameter).
        ``train_window``: the longest sequence whose positions were trained (the data window, or the
        pretrained context); generation stays inside it. None: the model's whole context."""
        super().__init__()
        self.save_hyperparameters(ignore=["base_model"])
        self.model = apply_finetune(base_model if base_model is not None else build_model(model), finetune)
        self.tokenizer = tokenizer_from_spec(tokenizer)
        self.optim_cfg = dict(optim or {})
        self.scheduler_cfg = dict(scheduler or {"name": "constant"})
        self.val_loss = MeanMetric()
        # data=mixture: each source's own validation loss as well (see setup); the names to log them by.
        self.val_loss_by_source: nn.ModuleList | None = None
        self.val_source_names: list[str] = []
        self.tokens_seen = 0
        self.best_val_loss = math.inf
        # The latest validation: what the model card of a checkpoint taken at that step reports.
        self.last_validation: dict | None = None
        # Set by train.py for its validation of best.ckpt after fitting (validate_after_fit): logged as
        # best/val_loss and best/val_ppl, not as one more val/loss point past the end of the curve.
        self.validating_best_checkpoint = False
        self._warned_zero_grad = False
        self._grad_norm: torch.Tensor | None = None
        self._listed_params: list[nn.Parameter] | None = None  # listed once a fit: see on_train_start
        self._grad_params: list[nn.Parameter] = []  # this step's parameters that have a gradient
        # The micro-batches of the optimizer step under way (gradient accumulation): loss x tokens, tokens.
        self._step_loss_sum: torch.Tensor | float = 0.0
        self._step_tokens = 0

    @property
    def context_length(self) -> int:
        return self.model.context_length

    @property
    def generation_window(self) -> int:
        """Tokens a sample may attend to: only positions that training has reached."""
        return min(self.hparams.get("train_window") or self.context_length, self.context_length)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        inputs, targets = batch
        # Each model computes its own loss (our GPT chunk by chunk through the head: models/fused_loss.py);
        # peft's wrapper passes the call through to it.
        return self.model.loss(inputs, targets)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        if not torch.isfinite(loss):
            # Stop before backward and the optimizer step: the weights (and every checkpoint) stay finite.
            raise TrainingDiverged(
                f"train/loss is {loss.item()} at step {self.global_step} "
                f"(lr {self.trainer.optimizers[0].param_groups[0]['lr']:.3g}): training stopped; "
                f"{kept_checkpoint(self.trainer)}. Lower optim.lr, keep gradient clipping on "
                "(trainer.gradient_clip_val=1.0), or use trainer.precision=32-true or bf16-mixed instead of 16-mixed"
            )
        self.tokens_seen += batch[0].numel() * self.trainer.world_size
        # The optimizer step trains on every micro-batch it accumulated: its loss is their token-weighted
        # mean. Lightning hands the loggers only the value logged at the batch that steps (the others
        # show in the progress bar as the mean so far).
        self._step_loss_sum = self._step_loss_sum + loss.detach() * batch[1].numel()
        self._step_tokens += batch[1].numel()
        step_loss = self._step_loss_sum / self._step_tokens
        if not optimizer_step_pending(self.trainer):
            self._step_loss_sum, self._step_tokens = 0.0, 0
        if self.logs_this_step():
            run_loss = mean_over_ranks(self, step_loss)  # the run's loss, not rank zero's share of the batch
            self.log("train/loss", run_loss, prog_bar=True)
            self.log("train/ppl", torch.exp(run_loss))
            self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"])
            self.log("tokens_seen", float(self.tokens_seen))
        return loss

    def logs_this_step(self) -> bool:
        """Whether this step's values reach the loggers. Lightning keeps only those of every
        ``log_every_n_steps``-th step; logging the others cost a tenth of a small model's step (each
        ``self.log`` is Lightning bookkeeping, and under DDP the mean loss is a collective). The last step
        of a run cut by ``max_steps`` logs too (Lightning logs when the run stops)."""
        trainer = attached_trainer(self)
        if trainer is None:
            return True
        return logs_this_step(trainer) or 0 < trainer.max_steps <= trainer.global_step + 1

    def setup(self, stage: str) -> None:
        """Data that mixes sources (data=mixture) validates each with a loader of its own: one mean each.
        Made here, before Lightning moves the module to its device; their states are not saved in checkpoints."""
        trainer = attached_trainer(self)
        names = list(getattr(trainer.datamodule if trainer is not None else None, "source_names", None) or [])
        if names and self.val_source_names != names:
            self.val_loss_by_source = nn.ModuleList(MeanMetric() for _ in names)
            self.val_source_names = names

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        # Weighted by the targets scored (ScoredWindows marks those an earlier window scored -100), so the
        # epoch value is the mean over every validation token once; MeanMetric also combines DDP ranks.
        loss, scored = self.loss(batch), (batch[1] != IGNORE_INDEX).sum()
        self.val_loss.update(loss, weight=scored)
        if self.val_loss_by_source is not None:
            self.val_loss_by_source[dataloader_idx].update(loss, weight=scored)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            for metric in [self.val_loss, *(self.val_loss_by_source or [])]:
                metric.reset()
            return
        by_source = self.validation_loss_by_source()
        val_loss = self.val_loss.compute()
        self.val_loss.reset()
        if self.validating_best_checkpoint:
            # Drawn as val/loss it read as the final weights' loss, one step after the last validation.
            self.log("best/val_loss", val_loss, sync_dist=True)
            self.log("best/val_ppl", torch.exp(val_loss), sync_dist=True)
            for name, loss in by_source.items():
                self.log(f"best/val_loss/{name}", loss, sync_dist=True)
            return
        self.best_val_loss = min(self.best_val_loss, val_loss.item())
        self.last_validation = {"step": self.global_step, "val/loss": val_loss.item()}
        # The MeanMetric already combined all ranks, so every rank holds the same value; sync_dist only
        # averages those equal values (and keeps Lightning from warning that nothing is synchronised).
        self.log("val/loss", val_loss, prog_bar=True, sync_dist=True)
        # Perplexity of the whole validation set: exp of its mean loss, not a mean of batch perplexities.
        self.log("val/ppl", torch.exp(val_loss), sync_dist=True)
        for name, loss in by_source.items():
            self.log(f"val/loss/{name}", loss, sync_dist=True)

    def validation_loss_by_source(self) -> dict[str, torch.Tensor]:
        """Each source's mean validation loss (data=mixture; none for other data), the metrics reset."""
        if self.val_loss_by_source is None:
            return {}
        # Computed on every rank, as each compute is a collective under DDP (a rank may hold none of a small
        # source's windows: the others' count).
        losses = {name: metric.compute() for name, metric in zip(self.val_source_names, self.val_loss_by_source, strict=True)}
        for metric in self.val_loss_by_source:
            metric.reset()
        return losses

    def configure_optimizers(self):
        lr = float(self.optim_cfg.get("lr", 3e-4))
        weight_decay = float(self.optim_cfg.get("weight_decay", 0.1))
        optimizer = torch.optim.AdamW(
            decay_groups(self.model, weight_decay, self.optim_cfg.get("decay", "matrices")),
            lr=lr,
            betas=tuple(self.optim_cfg.get("betas", (0.9, 0.95))),
            eps=float(self.optim_cfg.get("eps", 1e-8)),
            **adamw_kernel(self.optim_cfg.get("fused"), self.trainer),
        )
        total_steps = self.trainer.estimated_stepping_batches
        scheduler = build_scheduler(optimizer, self.scheduler_cfg, total_steps)
        warning = warmup_outlasts_run(self.scheduler_cfg, total_steps)
        if warning and self.trainer.is_global_zero:
            print(warning, file=sys.stderr, flush=True)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        if gradient_clip_val and gradient_clip_algorithm in (None, "norm") and self._grad_norm is not None:
            # The norm was just measured in on_before_optimizer_step (under FSDP: over every rank's shard):
            # clip with it instead of a second pass over every gradient (what clip_grad_norm_ would do).
            torch.nn.utils.clip_grads_with_norm_(self._grad_params, gradient_clip_val, self._grad_norm)
            return
        if clip_sharded_gradients(self, gradient_clip_val):  # FSDP, no norm measured yet: FSDP's own
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_train_start(self) -> None:
        # The parameters are listed again at each fit, after the strategy has set the model up (FSDP puts
        # flat shards in their place). Walking the module tree for them at every step, twice (the norm,
        # then clipping), cost 0.17 ms of make train's 38 ms step.
        self._listed_params = None

    def _params_with_grads(self) -> list[nn.Parameter]:
        if self._listed_params is None:
            self._listed_params = list(self.parameters())
        # Checked at every step: a frozen layer, or one the step did not reach, has no gradient.
        return [p for p in self._listed_params if p.grad is not None]

    def on_before_optimizer_step(self, optimizer) -> None:
        """Log the gradient norm (before clipping); stop on non-finite gradients, warn when none flow."""
        self._grad_params = self._params_with_grads()
        norm = sharded_grad_norm(self)  # FSDP: over every rank's shard, not this rank's alone
        if norm is None:
            grads = [p.grad for p in self._grad_params]
            norm = torch.nn.utils.get_total_norm(grads) if grads else torch.tensor(0.0)
        self._grad_norm = norm  # reused for clipping: the gradients as they are now (still scaled, if so)
        norm = norm / pending_loss_scale(self.trainer, optimizer)
        if not torch.isfinite(norm):
            if self.trainer.precision == "16-mixed":
                return  # the gradient scaler skips this step and lowers its scale: routine in float16
            raise TrainingDiverged(
                f"the gradient norm is {norm.item()} at step {self.global_step}: training stopped before the "
                f"optimizer step; {kept_checkpoint(self.trainer)}. Lower optim.lr or keep gradient clipping on "
                "(trainer.gradient_clip_val=1.0); trainer.detect_anomaly=true finds the operation that overflows"
            )
        if self.logs_this_step():
            self.log("grad_norm", norm)
        if norm == 0 and not self._warned_zero_grad:
            self._warned_zero_grad = True
            warnings.warn(
                f"all gradients are zero at step {self.global_step}: nothing flows back to the weights "
                "(frozen parameters, a detached loss, or an underflowing precision?)",
                stacklevel=1,
            )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["tokens_seen"] = self.tokens_seen
        checkpoint["best_val_loss"] = self.best_val_loss
        checkpoint["last_validation"] = self.last_validation

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.tokens_seen = int(checkpoint.get("tokens_seen", 0))
        self.best_val_loss = float(checkpoint.get("best_val_loss", math.inf))
        self.last_validation = checkpoint.get("last_validation")
