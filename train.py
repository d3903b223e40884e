"""Train a language model: `python train.py model=gpt124m data=shakespeare` (see conf/train.yaml)."""

import os

# Intel MKL (PyTorch's CPU matmuls) may pick its kernels by memory alignment from run to run, so two runs
# of one seed can differ in the last bits; resumed and uninterrupted runs once did on CI's CPU (never here).
# AUTO keeps the fastest code path for this CPU and makes it reproducible (MKL's "conditional numerical
# reproducibility"; the cost measured here is within noise). Set before MKL starts, so in the entry point.
os.environ.setdefault("MKL_CBWR", "AUTO")

import hydra
from omegaconf import DictConfig

import gptlab.core.resolvers  # noqa: F401  (registers the resolvers that conf/ uses)
from gptlab.core.entrypoint import mark_task_started, one_line_hydra_errors, report_user_errors
from gptlab.core.redaction import guard_outputs, load_dotenv


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    mark_task_started()
    guard_outputs()  # no API key or token reaches the console or a log file
    with report_user_errors():
        from gptlab.training.preflight import check_config

        checked = check_config(cfg)  # fails in a second, before Lightning is even imported
        from gptlab.training.run import train

        return train(cfg, checked)


if __name__ == "__main__":
    load_dotenv(os.environ.get("GPTLAB_DOTENV", ".env"))  # its keys and tokens never reach an output
    with one_line_hydra_errors():
        main()
