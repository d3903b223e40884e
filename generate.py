"""Generate text from a trained checkpoint or from GPT-2 weights; options in conf/generate.yaml.

python generate.py ckpt_path=outputs/.../checkpoints/last.ckpt prompt="ROMEO:" top_p=0.9
python generate.py init_from=gpt2 prompt="Every effort moves you" temperature=0
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from gptlab.core.entrypoint import (
    mark_task_started,
    one_line_hydra_errors,
    quiet_when_the_reader_leaves,
    report_user_errors,
)
from gptlab.core.redaction import guard_outputs


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    mark_task_started()  # an OSError from here on is the generation's, not the run folder's
    guard_outputs()  # no API key or token reaches the console
    with report_user_errors(), quiet_when_the_reader_leaves():
        from gptlab.generation.command import generate_from_config

        generate_from_config(OmegaConf.to_container(cfg, resolve=True))


if __name__ == "__main__":
    with one_line_hydra_errors():
        main()
