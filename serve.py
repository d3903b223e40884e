"""Serve a trained model: an OpenAI-style completions API and a page to try it; options in conf/serve.yaml.

python serve.py ckpt_path=outputs/DATE/TIME        # -> serving DATE/TIME on http://127.0.0.1:8000
python serve.py init_from=gpt2 port=8080
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from gptlab.core.collector import imports_without_collection
from gptlab.core.entrypoint import command


@command("serve")
def main(cfg: DictConfig) -> None:
    with imports_without_collection():
        from gptlab.serving.command import serve_from_config

    serve_from_config(OmegaConf.to_container(cfg, resolve=True))


if __name__ == "__main__":
    main()
