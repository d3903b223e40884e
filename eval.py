"""Evaluate a model on any data the standard way; options in conf/eval.yaml.

python eval.py ckpt_path=outputs/DATE/TIME                  # on the run's own validation data
python eval.py ckpt_path=outputs/DATE/TIME data=shakespeare
python eval.py init_from=gpt2 data=text data.path=wiki.test.raw eval.context=1024 eval.stride=512
"""

from __future__ import annotations

from omegaconf import DictConfig

from gptlab.core.collector import imports_without_collection
from gptlab.core.entrypoint import command


@command("eval", reports_sweeps=True)
def main(cfg: DictConfig) -> None:
    with imports_without_collection():
        from gptlab.core.saved_config import put_back_another_commands_record
        from gptlab.evaluation.command import data_named, evaluate_from_config, output_folder

    try:
        evaluate_from_config(cfg, output_folder(), data_given=data_named())
    finally:  # hydra.run.dir=<a training run>: its .hydra stays the run's record
        put_back_another_commands_record()


if __name__ == "__main__":
    main()
