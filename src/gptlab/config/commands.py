"""The entry configs: train.yaml's own keys (the groups have their schemas), generate.yaml, export.yaml,
report.yaml, prepare.yaml, eval.yaml and serve.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gptlab.config.ranges import TORCH_SEEDS, TRAIN_SEEDS, at_least, one_of, seed_within
from gptlab.config.training import check_built_entries
from gptlab.core.errors import ConfigError


@dataclass
class TrainConfig:
    seed: int = 1337
    ckpt_path: str | None = None  # resume: a .ckpt file, a run or checkpoints folder, or `last`
    init_from: str | None = None  # start from weights: gpt2, gpt2-medium, ..., a HF folder or a run of train.py
    compile: bool = False
    validate_after_fit: bool = True
    # The groups, each composed onto its own schema (gptlab.config.store).
    data: Any = None
    model: Any = None
    trainer: Any = None
    optim: Any = None
    finetune: Any = None
    scheduler: Any = None
    logger: Any = None
    callbacks: Any = None
    paths: Any = None

    def __post_init__(self) -> None:
        seed_within("seed", self.seed, TRAIN_SEEDS)
        check_built_entries("logger", self.logger)
        check_built_entries("callbacks", self.callbacks)
        # (ckpt_path with init_from is allowed: a run started from GPT-2 resumes with its own overrides.)
        max_length = getattr(self.data, "max_length", None)
        context = getattr(self.model, "context_length", None)
        if max_length and context and max_length > context and not self.init_from:
            raise ConfigError(
                f"data.max_length={max_length} is longer than model.context_length={context}; "
                "lower data.max_length or raise model.context_length"
            )


@dataclass
class GenerateConfig:
    """conf/generate.yaml (see there). Typed here; the rules between the options live with generation
    (gptlab.generation.command.check_generation_config), which any caller of it, not only this
    command, goes through."""

    ckpt_path: str | None = None
    init_from: str | None = None
    prompt: Any = None  # a string, or a list of strings
    prompt_file: str | None = None
    num_samples: int = 1
    max_new_tokens: int = 200
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    num_beams: int = 1
    length_penalty: float = 1.0
    context_length: int | None = None
    use_cache: bool = True
    seed: int | None = 1337
    stream: bool = False
    device: str = "auto"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        seed_within("seed", self.seed, TORCH_SEEDS)


@dataclass
class ServeLimits:
    max_prompt_tokens: int | None = None  # null: the generation window less one
    max_tokens: int = 512
    max_n: int = 8
    max_concurrent: int = 32
    max_body_bytes: int = 65536

    def __post_init__(self) -> None:
        for key in ("max_prompt_tokens", "max_tokens", "max_n", "max_concurrent"):
            at_least(f"limits.{key}", getattr(self, key), 1)
        at_least("limits.max_body_bytes", self.max_body_bytes, 256)


@dataclass
class ServeConfig:
    """conf/serve.yaml (see there); the rule between host and API key lives in gptlab.serving.command."""

    ckpt_path: str | None = None
    init_from: str | None = None
    model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    api_key_env: str = "GPTLAB_API_KEY"
    no_api_key_on_a_public_address: bool = False
    limits: ServeLimits = field(default_factory=ServeLimits)
    max_batch_rows: int = 16
    context_length: int | None = None
    device: str = "auto"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        at_least("max_batch_rows", self.max_batch_rows, 1)
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535 (0: any free port), got {self.port}")


@dataclass
class EvalSettings:
    split: str = "val"
    context: int | None = None
    stride: int | None = None
    batch_size: int = 4

    def __post_init__(self) -> None:
        one_of("eval.split", self.split, ("val", "train", "all"))
        at_least("eval.context", self.context, 2)
        at_least("eval.stride", self.stride, 1)
        at_least("eval.batch_size", self.batch_size, 1)  # a stride past the context: gptlab.evaluation


@dataclass
class EvalConfig:
    """conf/eval.yaml (see there)."""

    ckpt_path: str | None = None
    init_from: str | None = None
    model: Any = None  # model=hf_causal_lm model.pretrained=<folder>: any transformers causal LM
    eval: EvalSettings = field(default_factory=EvalSettings)
    tasks: Any = None  # the tasks chosen from conf/tasks/, each with its settings
    data: Any = None
    paths: Any = None
    device: str = "auto"
    dtype: str = "float32"


@dataclass
class ExportConfig:
    """conf/export.yaml (see there)."""

    ckpt_path: str | None = None
    out_dir: str | None = None
    dataset: str | None = None
    push_to_hub: str | None = None
    private: bool = False

    def __post_init__(self) -> None:
        # push_to_hub=true reads as a yes, but the schema makes it the repository "True".
        if self.push_to_hub in ("True", "False"):
            raise ConfigError(
                f"push_to_hub takes the Hub repository to upload to, not {self.push_to_hub.lower()}; "
                "e.g. push_to_hub=your-name/my-gpt"
            )


@dataclass
class ReportConfig:
    """conf/report.yaml (see there)."""

    sweep_dir: str | None = None
    out_dir: str | None = None


@dataclass
class PrepareConfig:
    """conf/prepare.yaml (see there): the data group and the paths it resolves against."""

    data: Any = None
    paths: Any = None
    parts: int = 1  # split a Hugging Face dataset into this many parts, prepared side by side
    nodes: int = 1  # machines sharing the parts
    node: int = 0  # this machine: it prepares the parts i with i mod nodes == node

    def __post_init__(self) -> None:
        at_least("parts", self.parts, 1)
        at_least("nodes", self.nodes, 1)
        at_least("node", self.node, 0)
        if self.node >= self.nodes:
            raise ConfigError(f"node={self.node} must be below nodes={self.nodes} (machines are numbered from 0)")
        if self.nodes > self.parts:
            raise ConfigError(f"nodes={self.nodes} machines need at least as many parts; set parts={self.nodes} or more")
