"""Tokenise a corpus into token shards ahead of training; options in conf/prepare.yaml and conf/data/.

python prepare.py data=text data.path=my_novels/
python prepare.py data=text data.path='corpus/**/*.txt' data.tokenizer=char
"""

from __future__ import annotations

from omegaconf import DictConfig

from gptlab.core.collector import imports_without_collection
from gptlab.core.entrypoint import command


@command("prepare")
def main(cfg: DictConfig) -> None:
    with imports_without_collection():
        from gptlab.data.prepare_command import prepare_from_config

    prepare_from_config(cfg)


if __name__ == "__main__":
    main()
