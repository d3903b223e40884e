"""Training as a submitit job: submit train.py runs to SLURM from Python, with resume on requeue.

Hydra users need none of this (``python train.py -m hydra/launcher=slurm ...``, see
conf/hydra/launcher/slurm.yaml). It is for scripts that drive submitit themselves:

    import submitit
    from gptlab.sweeps.slurm import TrainJob, slurm_parameters
    executor = submitit.AutoExecutor(folder="slurm_logs")
    executor.update_parameters(**slurm_parameters(nodes=2, devices=4), slurm_partition="gpu")
    job = executor.submit(TrainJob(["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"], "outputs/big"))

Every SLURM task runs train.py once (one task per device); Lightning's SLURMEnvironment reads the ranks
from the SLURM variables. The run folder is fixed at submission, so a preempted or timed-out job that
submitit requeues continues from that folder's last checkpoint.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gptlab.core.resolvers import repo_root

REPO_ROOT = Path(repo_root())  # where train.py is


def slurm_parameters(
    nodes: int = 1, devices: int = 1, timeout_min: int = 240, cpus_per_task: int = 8
) -> dict:
    """submitit parameters matching ``trainer.num_nodes=nodes trainer.devices=devices``."""
    return {
        "nodes": nodes,
        "tasks_per_node": devices,
        "gpus_per_node": devices,
        "cpus_per_task": cpus_per_task,
        "timeout_min": timeout_min,
    }


class TrainJob:
    """``python train.py *overrides`` in ``run_dir``: a picklable callable for submitit."""

    def __init__(self, overrides: list[str], run_dir: str | Path, resume: bool = False):
        self.overrides = list(overrides)
        self.run_dir = Path(run_dir).resolve()
        self.resume = resume

    def command(self) -> list[str]:
        args = [sys.executable, str(REPO_ROOT / "train.py"), *self.overrides, f"hydra.run.dir={self.run_dir}"]
        if self.resume:
            args.append("ckpt_path=last")
        return args

    def __call__(self) -> int:
        result = subprocess.run(self.command(), cwd=REPO_ROOT, env=os.environ.copy())
        if result.returncode != 0:
            raise RuntimeError(f"train.py exited with {result.returncode}; see {self.run_dir}/train.log")
        return result.returncode

    def checkpoint(self):
        """submitit calls this on preemption or timeout: requeue the same run, resuming from its last.ckpt."""
        import submitit

        has_checkpoint = (self.run_dir / "checkpoints" / "last.ckpt").is_file()
        return submitit.helpers.DelayedSubmission(
            TrainJob(self.overrides, self.run_dir, resume=has_checkpoint)
        )
