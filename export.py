"""Export a checkpoint as a Hugging Face GPT-2 folder that transformers loads; options in conf/export.yaml.

python export.py ckpt_path=outputs/DATE/TIME out_dir=exported/my-gpt
python export.py ckpt_path=outputs/DATE/TIME out_dir=exported/my-gpt push_to_hub=user/my-gpt   # reads HF_TOKEN
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from gptlab.core.collector import imports_without_collection
from gptlab.core.entrypoint import command


@command("export")
def main(cfg: DictConfig) -> None:
    with imports_without_collection():
        from gptlab.hub.command import export_from_config

    export_from_config(OmegaConf.to_container(cfg, resolve=True))


if __name__ == "__main__":
    main()
