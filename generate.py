"""Generate text from a trained checkpoint or from GPT-2 weights; options in conf/generate.yaml.

python generate.py ckpt_path=outputs/.../checkpoints/last.ckpt prompt="ROMEO:" top_p=0.9
python generate.py init_from=gpt2 prompt="Every effort moves you" temperature=0
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from gptlab.errors import GptlabError


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    # A plain try/except rather than gptlab.cli.report_user_errors: that helper imports Lightning, which
    # would add seconds to every generate.py call while generation itself never needs it.
    try:
        from gptlab.generate_app import generate_from_config

        generate_from_config(OmegaConf.to_container(cfg, resolve=True))
    except GptlabError as err:  # same output as report_user_errors: one line, exit code 2
        message = " ".join(str(err).split())
        print(f"{getattr(err, 'label', 'error')}: {message}", file=sys.stderr, flush=True)
        sys.exit(getattr(err, "exit_code", 2))


if __name__ == "__main__":
    main()
