"""Train a language model: `python train.py model=gpt124m data=shakespeare` (see conf/train.yaml)."""

import os

# Intel MKL (PyTorch's CPU matmuls) may pick its kernels by memory alignment from run to run, so two runs
# of one seed can differ in the last bits; resumed and uninterrupted runs did on CI's CPU, and 1 of 96
# processes did here under load. AUTO keeps the fastest code path for this CPU and makes it reproducible
# (MKL's "conditional numerical reproducibility"; the cost measured here is within noise). Its other
# conditions: a fixed thread count, so neither MKL nor OpenMP may change it at run time (*_DYNAMIC; one
# CI run differed in the last bit of a grad norm with AUTO alone). Set before MKL starts: here.
os.environ.setdefault("MKL_CBWR", "AUTO")
os.environ.setdefault("MKL_DYNAMIC", "FALSE")
os.environ.setdefault("OMP_DYNAMIC", "FALSE")

from omegaconf import DictConfig

import gptlab.core.resolvers  # noqa: F401  (registers the resolvers that conf/ uses)
from gptlab.core.collector import imports_without_collection
from gptlab.core.entrypoint import command


@command("train", reports_sweeps=True)
def main(cfg: DictConfig) -> float | None:
    from gptlab.training.preflight import check_config
    from gptlab.training.wandb_first import import_wandb_first

    checked = check_config(cfg)  # fails in a second, before Lightning is even imported
    with imports_without_collection():  # Lightning's import costs seconds; the collector finds nothing in it
        import_wandb_first(cfg)  # before Lightning: wandb starts faster with fewer modules loaded
        from gptlab.training.run import train

    return train(cfg, checked)


if __name__ == "__main__":
    main()
