"""Train a language model: `python train.py model=gpt124m data=shakespeare` (see conf/train.yaml)."""

import os

import hydra
from omegaconf import DictConfig

import gptlab.config  # noqa: F401  (registers the resolvers that conf/ uses)
from gptlab.cli import mark_task_started, one_line_hydra_errors, report_user_errors
from gptlab.secrets import guard_outputs, load_dotenv


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    mark_task_started()
    guard_outputs()  # no API key or token reaches the console or a log file
    with report_user_errors():
        from gptlab.preflight import check_config

        check_config(cfg)  # fails in a second, before torch and Lightning are even imported
        from gptlab.training import train

        return train(cfg)


if __name__ == "__main__":
    load_dotenv(os.environ.get("GPTLAB_DOTENV", ".env"))  # its keys and tokens never reach an output
    with one_line_hydra_errors():
        main()
