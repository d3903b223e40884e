"""The schemas registered with Hydra's ConfigStore, under ``schema/``: each file of conf/ names its own
(``defaults: [/schema/model/gpt@_here_, _self_]``), so Hydra types every value as it composes the config.

Importing this module registers them. Hydra itself imports it wherever it starts (the plugin module
src/hydra_plugins/gptlab_schemas), so every way of composing conf/ finds them.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from gptlab.config.commands import (
    EvalConfig,
    ExportConfig,
    GenerateConfig,
    PrepareConfig,
    ReportConfig,
    ServeConfig,
    TrainConfig,
)
from gptlab.config.data import (
    DataConfig,
    HFDataConfig,
    MixtureDataConfig,
    ShardsDataConfig,
    TextFilesDataConfig,
)
from gptlab.config.model import DecoderModelConfig, GPTModelConfig, HFCausalLMConfig
from gptlab.config.training import FinetuneConfig, OptimConfig, SchedulerConfig, TrainerConfig

SCHEMAS = {
    "schema/train": TrainConfig,
    "schema/generate": GenerateConfig,
    "schema/export": ExportConfig,
    "schema/report": ReportConfig,
    "schema/prepare": PrepareConfig,
    "schema/eval": EvalConfig,
    "schema/serve": ServeConfig,
    "schema/data/preset": DataConfig,
    "schema/data/text": TextFilesDataConfig,
    "schema/data/hf": HFDataConfig,
    "schema/data/shards": ShardsDataConfig,
    "schema/data/mixture": MixtureDataConfig,
    "schema/model/gpt": GPTModelConfig,
    "schema/model/decoder": DecoderModelConfig,
    "schema/model/hf_causal_lm": HFCausalLMConfig,
    "schema/optim/adamw": OptimConfig,
    "schema/scheduler/lr": SchedulerConfig,
    "schema/finetune/finetune": FinetuneConfig,
    "schema/trainer/lightning": TrainerConfig,
}


def register_schemas() -> None:
    store = ConfigStore.instance()
    for path, schema in SCHEMAS.items():
        group, _, name = path.rpartition("/")
        store.store(group=group, name=name, node=schema)


register_schemas()
