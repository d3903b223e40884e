"""Train a language model: `python train.py model=gpt124m data=shakespeare` (see conf/train.yaml)."""

import hydra
from omegaconf import DictConfig

import gptlab.config  # noqa: F401  (registers the resolvers that conf/ uses)
from gptlab.cli import report_user_errors
from gptlab.training import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    with report_user_errors():
        return train(cfg)


if __name__ == "__main__":
    main()
