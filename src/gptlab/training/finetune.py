"""Fine-tuning modes: `full` (every weight trains) and `lora` (peft's low-rank adapters, base frozen).

LoRA adds (alpha / rank) * B @ A to each targeted weight W, with B initialised to zero, so the model is
unchanged at step 0 and only A and B train. Merging folds B @ A into W, leaving a plain model to export.
"""

from __future__ import annotations

from torch import nn

from gptlab.core.errors import ConfigError
from gptlab.models.language_model import LanguageModel, is_peft_model, language_model


def _lora_config(cfg: dict, model: LanguageModel):
    from peft import LoraConfig

    targets = cfg.get("target_modules", "all-linear")
    if targets == "all-linear":
        targets = model.lora_targets
    if targets is None:
        raise ConfigError(
            f"finetune.target_modules=all-linear is not defined for {type(model).__name__}; "
            "list the module names to adapt, e.g. finetune.target_modules=[out_proj]"
        )
    rank = int(cfg.get("rank", 16))
    return LoraConfig(
        r=rank,
        lora_alpha=float(2 * rank if cfg.get("alpha") is None else cfg["alpha"]),  # null: 2 x rank
        lora_dropout=float(cfg.get("dropout", 0.0)),
        target_modules=list(targets) if not isinstance(targets, str) else targets,
    )


def apply_finetune(model: LanguageModel, cfg: dict | None) -> nn.Module:
    """The model to train under ``finetune`` (``{"name": "full"}`` or a LoRA config)."""
    if (cfg or {}).get("name", "full") == "full":  # or lora (gptlab.config.training.FINETUNE_MODES)
        return model
    return model.add_lora(_lora_config(cfg, model))


def merge_finetune(model: nn.Module) -> LanguageModel:
    """Fold LoRA adapters into the base weights; a model without adapters comes back as it is."""
    if is_peft_model(model):  # the adapters were added around the model
        model = model.merge_and_unload()
    return language_model(model).merge_lora()


def parameter_summary(model: nn.Module) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return f"{trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.2f}%)"
