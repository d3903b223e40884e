"""What prepare.py does with conf/prepare.yaml: build the data group's module and make its shards (each
source's that tokenises into shards, for a mixture)."""

from __future__ import annotations

from omegaconf import DictConfig

from gptlab.core.errors import ConfigError
from gptlab.data.class_names import read_data
from gptlab.data.mixture_datamodule import MixtureData
from gptlab.data.prepare_parts import prepare_parts
from gptlab.data.prepared_datamodule import PreparedData


def prepare_from_config(cfg: DictConfig) -> None:
    datamodule = read_data(cfg.data)  # no Lightning: nothing is trained here
    if cfg.parts > 1:
        return prepare_parts(cfg, datamodule)
    modules = datamodule.sources if isinstance(datamodule, MixtureData) else [datamodule]
    to_prepare = [module for module in modules if isinstance(module, PreparedData)]
    if not to_prepare:
        raise ConfigError(
            f"data={datamodule.name} needs no preparing (train.py reads it as it is); prepare.py is for "
            "data=text, data=hf and mixtures of them"
        )
    datamodule.prepare_data()  # a mixture's errors name the source they are about
    for module in to_prepare:
        report(module)


def report(datamodule: PreparedData) -> None:
    prepared = datamodule.prepare_data()
    datamodule.load_tokenizer()
    index = prepared.index
    print(f"shards: {prepared.folder} ({index['tokenizer']['kind']} tokenizer, {index['vocab_size']} ids)")
    for split in ("train", "val"):
        record = index["splits"][split]
        shards = len(record["shards"])
        print(f"  {split}: {counted(record['documents'], 'document')}, {record['tokens']:,} tokens in {counted(shards, 'shard')}")
    print(
        "train on them with the same data= options (found at once), or name the shards: "
        f"data=shards data.train='{prepared.folder}/train_*.bin' data.val='{prepared.folder}/val_*.bin'"
    )


def counted(number: int, noun: str) -> str:
    """'1 shard', '2 shards', '1,024 documents'."""
    return f"{number:,} {noun}{'s' * (number != 1)}"
