"""Several processes per run (DDP, FSDP): validation split without repeats, metrics averaged over ranks,
and Hydra multirun jobs that launch their ranks like a single run does.

Lightning starts DDP ranks 1..N-1 by re-running the command line (its subprocess launcher). In a Hydra
multirun that command line is the whole sweep (`-m ...`), so every rank would start a sweep of its own
(Lightning issue #15689). :func:`launch_ranks_as_single_runs` makes a multirun job start its ranks as
single runs of that job instead: its own overrides, its own folder, no `-m`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import lightning as L
import torch
from torch.utils.data import Dataset, Sampler

from gptlab.compat.lightning import attached_trainer, set_rank_command
from gptlab.core.errors import ConfigError
from gptlab.core.rank_lines import name_this_launch, ranks_started
from gptlab.core.sweep_jobs import SWEEP_JOB_ENV, current_job, job_started_rank_processes


def validation_sampler(dataset: Dataset, trainer: L.Trainer | None) -> Sampler | None:
    """Each rank scores its own validation windows, none twice; None for a single process.

    Lightning's default DistributedSampler pads the last round with repeated windows so that every rank
    gets as many batches; validation does not need that (no gradients are synchronised), and the repeats
    would bias val/loss. The ranks' token-weighted means are combined by the MeanMetric at epoch end.
    """
    if trainer is None or trainer.world_size <= 1:
        return None
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

    return UnrepeatedDistributedSampler(
        dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
    )


def mean_over_ranks(module: L.LightningModule, value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over all ranks (itself for one process): what rank zero logs for the run."""
    value = value.detach()
    trainer = attached_trainer(module)
    if trainer is None or trainer.world_size <= 1:
        return value
    return trainer.strategy.reduce(value, reduce_op="mean")


def check_nodes(num_nodes: int) -> None:
    """Several nodes need someone to start train.py on each: a cluster launcher (SLURM, torchrun, LSF, MPI)
    or the user, with MASTER_ADDR and NODE_RANK set on every node. Without either, rank zero waits for
    the other nodes' ranks in init_process_group, silently, until torch's 30-minute timeout."""
    if num_nodes <= 1 or all(name in os.environ for name in ("MASTER_ADDR", "NODE_RANK")):
        return
    from lightning.fabric.plugins.environments import (
        LSFEnvironment,
        MPIEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )

    if any(env.detect() for env in (SLURMEnvironment, TorchElasticEnvironment, LSFEnvironment, MPIEnvironment)):
        return
    raise ConfigError(
        f"trainer.num_nodes={num_nodes} waits for {num_nodes} machines, but nothing starts train.py on the "
        "others (no SLURM, torchrun, LSF or MPI launch; MASTER_ADDR and NODE_RANK unset); on one machine use "
        "trainer.devices=N; across machines run train.py on each with MASTER_ADDR, MASTER_PORT and NODE_RANK set "
        "(README: Several processes)"
    )


def is_multirun_job() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def rank_command(local_rank: int) -> tuple[Sequence[str], str]:
    """The command (and folder) that starts rank ``local_rank`` of the current Hydra job.

    A single run: Lightning's own choice (the same command line, pinned to this run's folder). A multirun
    job: this script with the job's own overrides as a single run in the job's folder, so the rank joins
    this job instead of starting the sweep again.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd, to_absolute_path

    hydra_cfg = HydraConfig.get()
    ranks_started()  # their error lines and this process's are printed once (gptlab.core.rank_lines)
    import __main__

    if __main__.__spec__ is None:
        command = [sys.executable, to_absolute_path(sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    if is_multirun_job():
        job_started_rank_processes()  # Lightning watches them: this job cannot fail alone
        command += [o for o in hydra_cfg.overrides.task if not o.startswith("hydra.run.dir=")]
        command.append("hydra.mode=RUN")  # hparams_search= configs switch to MULTIRUN on their own
    else:
        command += sys.argv[1:]
    run_dir = hydra_cfg.runtime.output_dir  # resolved once: a rank started a second later uses it too
    # Only rank zero writes .hydra/ and the job's log; the others log to train_ddp_process_N.log.
    command += [
        f"hydra.run.dir={_quoted(str(run_dir))}",
        f"hydra.job.name=train_ddp_process_{local_rank}",
        "hydra.output_subdir=null",
    ]
    return command, get_original_cwd()


def _quoted(value: str) -> str:
    # Hydra's override grammar reads a double-quoted string verbatim (spaces, `=`, `,` included).
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def launch_ranks_as_single_runs() -> None:
    """Point Lightning's subprocess launchers at :func:`rank_command` (idempotent).

    In a multirun job, its name goes into the environment its ranks will copy: they run as single runs, and
    their error line names the job as rank zero's does (whichever rank fails first, Lightning's watcher may
    kill the others before they print). Set here, before the launch: Lightning copies the environment for a
    rank before it asks rank_command for the command, so a name set there reached no rank of a sweep's first
    job, and the previous job's name the ranks of the next. A rank process (a single run) keeps the name it got.
    """
    _launch_env.update({name: os.environ.get(name) for name in _LAUNCH_ENV})
    if "LOCAL_RANK" not in os.environ:  # this process would start the ranks (a rank, or torchrun's, has it set)
        name_this_launch()
    if is_multirun_job():
        os.environ[SWEEP_JOB_ENV] = str(current_job())
    set_rank_command(rank_command)


# What Lightning's launcher writes into the launching process's own environment. Left there, the next job
# of a multirun would take LOCAL_RANK as a sign that its ranks were started by someone else (torchrun,
# SLURM), start none, and wait for them forever.
_LAUNCH_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_launch_env: dict[str, str | None] = {}


def end_process_group() -> None:
    """Close this job's process group and undo its launch, so the next job of a multirun starts afresh."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for name, value in _launch_env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _launch_env.clear()


def transformer_block_types() -> set[type]:
    """The layer classes FSDP shards one at a time (auto_wrap_policy of conf/trainer/fsdp.yaml): each
    model's ``block_types``."""
    from gptlab.models.language_model import block_types_of_every_model

    return block_types_of_every_model()


def is_sharded(trainer: L.Trainer) -> bool:
    """Whether the weights are split across ranks (FSDP): no rank can run the model on its own."""
    from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

    return isinstance(trainer.strategy, (FSDPStrategy, ModelParallelStrategy))


def sharded_grad_norm(module: L.LightningModule) -> torch.Tensor | None:
    """The gradient norm over all ranks' shards under FSDP (None when not sharded).

    A rank holds only its shard of each gradient, so the norm of its own gradients is that shard's norm.
    FSDP's ``clip_grad_norm_`` reduces over every rank (and knows each sharding strategy); with an infinite
    ``max_norm`` its clip coefficient is clamped to 1, so it measures without changing a gradient.
    """
    trainer = attached_trainer(module)
    if trainer is None or not is_sharded(trainer):
        return None
    return trainer.strategy.model.clip_grad_norm_(float("inf"))


def clip_sharded_gradients(module: L.LightningModule, max_norm: float | None) -> bool:
    """Clip by the norm over all shards (measured by :func:`sharded_grad_norm`); False when not sharded.

    Lightning refuses ``gradient_clip_val`` under FSDP: each rank holds a shard of the gradients, so a plain
    ``clip_grad_norm_`` would clip every shard by its own norm. Scaling every local shard by the one global
    factor is what FSDP's own ``clip_grad_norm_`` does after its reduction.
    """
    trainer = attached_trainer(module)
    if not max_norm or trainer is None or not is_sharded(trainer):
        return False
    total_norm = sharded_grad_norm(module)
    # clip_grads_with_norm_ takes the parameters (it scales each one's .grad in place).
    with_grads = [p for p in module.parameters() if p.grad is not None]
    torch.nn.utils.clip_grads_with_norm_(with_grads, max_norm, total_norm)
    return True
