"""The model a training run starts from: its config (plain data, for the checkpoint) and, where the run
starts from pretrained weights, the loaded model itself. Every path checks the model against the data."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf
from torch import nn

from gptlab.checkpoints.paths import checkpoint_file, names_a_gptlab_checkpoint
from gptlab.checkpoints.reader import load_checkpoint_safely
from gptlab.core.errors import ConfigError
from gptlab.data.class_names import read_data
from gptlab.data.tokenizers import CharTokenizer, in_the_models_characters, require_same_tokens
from gptlab.data.window_data import WindowData

HF_CAUSAL_LM = "gptlab.models.hf_causal_lm.HFCausalLM"
# How our GPT computes what its weights define (the fast path, BENCHMARKS.md): a model started from weights
# takes them from the config, as a new one does.
RUNTIME_SETTINGS = ("attn_impl", "fused_loss")
# What a run started from a checkpoint may change of its model: its dropout (training, not the weights'
# shape) and the runtime settings.
CHANGEABLE_WHEN_TRAINED = ("drop_rate", *RUNTIME_SETTINGS)


def read_training_data(cfg: DictConfig) -> WindowData:
    """The run's data read and tokenised, its tokenizer loaded, as its Lightning-free class: what a corpus
    can get wrong (a path that is not there, bytes that are not UTF-8, a missing column, a character the
    model never saw) is met here, before train.py imports Lightning (its preflight); a Trainer fits on the
    same object made a LightningDataModule (gptlab.data.window_datamodule.as_lightning_data)."""
    datamodule: WindowData = read_data(cfg.data, seed=cfg.seed)
    characters = characters_of_the_start_checkpoint(cfg)
    if characters is not None:
        datamodule.vocabulary = characters  # new text in its characters goes on, not only its own corpus
    with in_the_models_characters(datamodule.name, f"init_from={cfg.init_from}"):
        datamodule.prepare_data()
        datamodule.load_tokenizer()
    return datamodule


def data_and_start_model(
    cfg: DictConfig, datamodule: WindowData | None = None
) -> tuple[WindowData, nn.Module | None, dict]:
    """The run's data and the model it starts from, in the order each needs the other: the tokenizer
    sets the model's vocabulary, then the model (its config, or pretrained weights) sets the training
    window, then the corpus is cut into windows. ``datamodule``: what :func:`read_training_data` returned,
    where it already ran."""
    if datamodule is None:
        datamodule = read_training_data(cfg)
    with in_the_models_characters(datamodule.name, f"init_from={cfg.init_from}"):
        start_model, model_cfg = build_start_model(cfg, datamodule)
        datamodule.setup("fit")
    return datamodule, start_model, model_cfg


def characters_of_the_start_checkpoint(cfg: DictConfig) -> CharTokenizer | None:
    """The vocabulary of a character model the run starts from (init_from= a gptlab checkpoint), read
    before its weights (memory-mapped), since the data is tokenised before the model is built."""
    if not cfg.get("init_from") or not names_a_gptlab_checkpoint(str(cfg.init_from)):
        return None
    checkpoint = load_checkpoint_safely(checkpoint_file(str(cfg.init_from), key="init_from"), mmap=True)
    spec = (checkpoint.get("hyper_parameters") or {}).get("tokenizer") or {}
    return CharTokenizer(spec["chars"]) if spec.get("kind") == "char" else None


def positions_trained(
    cfg: DictConfig, datamodule: WindowData, model_cfg: dict, start_model: nn.Module | None = None
) -> int:
    """The longest sequence whose positions the model will have been trained on: the data window, or
    all of a pretrained model's context (its pretraining covered them), or the longer of this run's window
    and the one a gptlab checkpoint it starts from was trained on."""
    earlier = getattr(start_model, "positions_trained_before", None)
    if earlier is not None:
        return max(int(earlier), datamodule.max_length)
    if cfg.get("init_from") or cfg.model.get("pretrained"):
        return int(model_cfg.get("context_length") or datamodule.max_length)
    return datamodule.max_length


def starts_from_weights(cfg: DictConfig) -> bool:
    """Whether the run loads a model (init_from=, or a transformers model), which draws from the random
    generator as it is built, so only after the run's seed is set; a model built from its config is only
    a config until the LightningModule makes it."""
    return bool(cfg.get("init_from")) or OmegaConf.select(cfg, "model._target_") == HF_CAUSAL_LM


def build_start_model(cfg: DictConfig, datamodule: WindowData) -> tuple[nn.Module | None, dict]:
    """(pretrained model or None, model config). None means: build from the config, randomly initialised."""
    if cfg.get("init_from"):
        if names_a_gptlab_checkpoint(str(cfg.init_from)):
            return load_trained_checkpoint(cfg, datamodule)
        return load_pretrained_gpt2(cfg, datamodule)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    if model_cfg.get("_target_") == HF_CAUSAL_LM:
        return build_hf_causal_lm(model_cfg, datamodule)
    return None, model_config(model_cfg, datamodule)


def model_config(model_cfg: dict, datamodule: WindowData) -> dict:
    """The model's constructor arguments, checked against the data it will see."""
    model_cfg["vocab_size"] = vocabulary_size(model_cfg.get("vocab_size"), datamodule.tokenizer)
    datamodule.fit_window(model_cfg["context_length"], "model.context_length")
    return model_cfg


def vocabulary_size(requested: int | None, tokenizer) -> int:
    """The model's vocabulary: the tokenizer's, the one place that decides it.

    A smaller one could not embed every id; a larger one would predict, sample and score ids that no
    text holds. (Padding the embedding for speed is ``model.vocab_pad_multiple``: padded rows are never
    predicted.)
    """
    size = tokenizer.vocab_size
    if requested is None or requested == size:
        return size
    kind = tokenizer.spec()["kind"]
    if requested < size:
        problem = f"is smaller than the {kind} tokenizer's {size} ids, so some ids could not be embedded"
    else:
        problem = f"is larger than the {kind} tokenizer's {size} ids, so ids no text holds would be predicted"
    raise ConfigError(
        f"model.vocab_size={requested} {problem}; leave model.vocab_size unset (it follows the tokenizer), "
        "and pad the embedding for speed with model.vocab_pad_multiple=64 instead"
    )


def require_gpt2_tokens(datamodule: WindowData, source: str) -> None:
    kind = datamodule.tokenizer.spec()["kind"]
    if kind != "gpt2":
        raise ConfigError(
            f"{source} needs GPT-2 BPE data, but data={datamodule.name} uses the {kind} tokenizer; "
            "use data=shakespeare or data=verdict"
        )


def load_pretrained_gpt2(cfg: DictConfig, datamodule: WindowData) -> tuple[nn.Module, dict]:
    """GPT-2 weights in our GPT (`init_from=`); the model's shape comes from them, not from `model=`."""
    from gptlab.hub.gpt2_import import load_pretrained_gpt  # transformers is slow to import: only when needed

    require_gpt2_tokens(datamodule, f"init_from={cfg.init_from}")
    runtime = {key: cfg.model[key] for key in RUNTIME_SETTINGS if cfg.model.get(key) is not None}
    model, model_cfg = load_pretrained_gpt(str(cfg.init_from), drop_rate=cfg.model.get("drop_rate"), runtime=runtime)
    datamodule.fit_window(model.context_length, "the pretrained context_length")
    print(f"init_from={cfg.init_from}: starting from pretrained weights ({model_cfg})", flush=True)
    return model, model_cfg


def load_trained_checkpoint(cfg: DictConfig, datamodule: WindowData) -> tuple[nn.Module, dict]:
    """The weights of a gptlab checkpoint (``init_from=`` its .ckpt or run folder) as the start of a new run:
    the model as it was trained (its shape, LoRA adapters merged), a fresh optimizer, schedule and step count,
    on this run's data, which must be tokenised as the checkpoint's was. (``ckpt_path=`` resumes that run.)"""
    from gptlab.checkpoints.loading import load_checkpoint_model, trained_window

    changes = trained_model_changes(cfg, command_line_overrides())
    model, tokenizer, checkpoint = load_checkpoint_model(str(cfg.init_from), key="init_from", model_changes=changes)
    require_same_tokens(tokenizer.spec(), datamodule.tokenizer.spec(), datamodule.name, f"init_from={cfg.init_from}")
    datamodule.fit_window(model.context_length, "the checkpoint's context_length")
    model.positions_trained_before = trained_window(checkpoint, model)
    # A LoRA run's base weights stay frozen after its adapters are merged: this run trains what finetune= says.
    model.requires_grad_(True).train()
    model_cfg = {**checkpoint["hyper_parameters"]["model"], **changes}
    print(f"init_from={cfg.init_from}: starting from its weights, step {checkpoint.get('global_step')} ({model_cfg})", flush=True)
    return model, model_cfg


def trained_model_changes(cfg: DictConfig, overrides: list[str]) -> dict:
    """The model settings of a run started from a gptlab checkpoint (``init_from=<run>``) that the command
    line changes: ``model.drop_rate``, ``model.attn_impl``, ``model.fused_loss``; the rest is the checkpoint's
    (its shape fits its weights, its GELU is what it learned with). Any other ``model.KEY=`` was read by
    nothing, without a word: it is refused."""
    changes = {}
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if not key.startswith("model."):
            continue  # model=NAME too: not read, as with init_from=gpt2
        name = key.removeprefix("model.")
        if name not in CHANGEABLE_WHEN_TRAINED:
            raise ConfigError(
                f"{override.lstrip('+~')} does not apply with init_from={cfg.init_from}: the model is rebuilt as that run trained "
                f"it; of its settings only {', '.join(f'model.{k}' for k in CHANGEABLE_WHEN_TRAINED)} can change"
            )
        changes[name] = OmegaConf.select(cfg, key)
    return changes


def command_line_overrides() -> list[str]:
    """The overrides the user typed (Hydra's task overrides); none outside a Hydra command."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def build_hf_causal_lm(model_cfg: dict, datamodule: WindowData) -> tuple[nn.Module, dict]:
    """`model=hf_causal_lm`: a transformers model, pretrained (`model.pretrained=`) or from `model.hf_config`."""
    from gptlab.models.hf_causal_lm import HFCausalLM, pretrained_reading

    pretrained = model_cfg.pop("pretrained", None)
    context_length = model_cfg.get("context_length")
    if pretrained:
        model = pretrained_reading(str(pretrained), datamodule.tokenizer, context_length)
    else:
        model = HFCausalLM(hf_config=model_cfg.get("hf_config"), context_length=context_length)
        if model.embedding_rows < datamodule.vocab_size:
            raise ConfigError(
                f"model.hf_config has vocab_size={model.embedding_rows}, fewer than the tokenizer's "
                f"{datamodule.vocab_size} ids; set its vocab_size to at least {datamodule.vocab_size}"
            )
    model.vocab_size = datamodule.vocab_size  # logits of padded embedding rows are cut off
    datamodule.fit_window(model.context_length, "the model's context_length")
    # The checkpoint rebuilds the architecture from its config; the weights come from the state dict.
    return model, {"_target_": HF_CAUSAL_LM, **model.config_dict()}
