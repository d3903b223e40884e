"""Summarise a Hydra multirun folder (a sweep); options in conf/report.yaml.

python report.py sweep_dir=multirun/DATE/TIME                  # writes report.md, report.csv, val_loss.png there
python report.py sweep_dir=multirun/DATE/TIME out_dir=reports/lr
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from gptlab.core.collector import imports_without_collection
from gptlab.core.entrypoint import command


@command("report")
def main(cfg: DictConfig) -> None:
    with imports_without_collection():
        from gptlab.sweeps.report import report_from_config

    report_from_config(OmegaConf.to_container(cfg, resolve=True))


if __name__ == "__main__":
    main()
