"""Generate text from a trained checkpoint or from GPT-2 weights; options in conf/generate.yaml.

python generate.py ckpt_path=outputs/.../checkpoints/last.ckpt prompt="ROMEO:" top_p=0.9
python generate.py init_from=gpt2 prompt="Every effort moves you" temperature=0
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from gptlab.core.collector import imports_without_collection
from gptlab.core.entrypoint import command


@command("generate")
def main(cfg: DictConfig) -> None:
    with imports_without_collection():
        from gptlab.generation.command import generate_from_config

    generate_from_config(OmegaConf.to_container(cfg, resolve=True))


if __name__ == "__main__":
    main()
