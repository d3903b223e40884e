"""What prepare.py does with conf/prepare.yaml: build the data group's module and make its shards."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig

from gptlab.core.errors import ConfigError
from gptlab.data.prepared_datamodule import PreparedDataModule


def prepare_from_config(cfg: DictConfig) -> None:
    datamodule = instantiate(cfg.data)
    if not isinstance(datamodule, PreparedDataModule):
        raise ConfigError(
            f"data={datamodule.name} needs no preparing (train.py reads it as it is); prepare.py is for "
            "data=text"
        )
    prepared = datamodule.prepare_data()
    datamodule.load_tokenizer()
    index = prepared.index
    print(f"shards: {prepared.folder} ({index['tokenizer']['kind']} tokenizer, {index['vocab_size']} ids)")
    for split in ("train", "val"):
        record = index["splits"][split]
        print(f"  {split}: {record['documents']:,} documents, {record['tokens']:,} tokens in {len(record['shards'])} shards")
    print(
        "train on them with the same data= options (found at once), or name the shards: "
        f"data=shards data.train='{prepared.folder}/train_*.bin' data.val='{prepared.folder}/val_*.bin'"
    )
