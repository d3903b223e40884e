"""Several processes per run: DDP on 2 CPU processes (gloo) through train.py, as a user runs it."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from cli_runner import TINY_DECODER, assert_ok, clean_env, read_metrics, run_script, run_train
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from repo import REPO_ROOT
from tiny_models import tiny_gpt_config

from gptlab.core.errors import ConfigError
from gptlab.training.distributed import check_nodes, transformer_block_types, validation_sampler
from gptlab.training.module import build_model

# 5% of "The Verdict" in windows of 32 tokens is 8 training windows: one global batch of 8 is the whole
# training set, so a step sees the same windows whatever order a sampler draws them in, and DDP with
# 2 x 4 must train exactly like one process with 1 x 8 (same seed, same initial weights, no dropout).
SAME_GLOBAL_BATCH = [
    "model=gpt_tiny",
    "data=verdict",
    "debug=fast",
    "data.train_ratio=0.05",
    "data.max_length=32",
    "trainer.max_steps=2",
    "trainer.max_epochs=2",
    "validate_after_fit=false",
    "trainer.val_check_interval=1.0",
    "trainer.limit_val_batches=1.0",
    "optim.lr=1e-3",
]
DDP_CPU = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]


def column(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key)]


@pytest.fixture(scope="module")
def single_dir(tmp_path_factory) -> Path:
    """The reference: one process with the whole global batch of 8, on the CPU (on a machine with a GPU,
    accelerator=auto would put it there)."""
    run_dir = tmp_path_factory.mktemp("single") / "single"
    assert_ok(run_train(run_dir, *SAME_GLOBAL_BATCH, "data.batch_size=8", "logger=csv", "trainer.accelerator=cpu"))
    return run_dir


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """last.ckpt loaded into a fresh model."""
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    model = build_model(checkpoint["hyper_parameters"]["model"])
    model.load_state_dict({k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()})
    return model.state_dict()


def assert_same_weights(run_dir: Path, reference_dir: Path) -> None:
    weights, reference = final_weights(run_dir), final_weights(reference_dir)
    for key, value in reference.items():
        assert torch.allclose(weights[key], value, atol=1e-5), key


@pytest.mark.e2e
@pytest.mark.xdist_group("single_process_reference")  # one worker runs the reference once
def test_ddp_on_two_processes_trains_like_one_process_with_the_same_global_batch(tmp_path, single_dir):
    ddp_dir = tmp_path / "ddp"
    result = run_train(ddp_dir, *SAME_GLOBAL_BATCH, "data.batch_size=4", *DDP_CPU)  # default logger: wandb
    assert_ok(result)

    # One run folder, one config, one logger run: rank 1 writes only its own log file there.
    assert sorted(p.name for p in ddp_dir.parent.iterdir()) == ["ddp"]
    assert len(list(ddp_dir.rglob("metrics.csv"))) == 1
    assert len(list(ddp_dir.rglob(".hydra"))) == 1
    assert len(list((ddp_dir / "wandb").glob("offline-run-*"))) == 1
    assert result.stdout.count("run folder:") == 1  # rank zero alone reports, samples and plots
    assert result.stdout.count("[sample @") == 2 and result.stdout.count("loss curves:") == 1
    assert (ddp_dir / "samples.txt").read_text().count("--- step") == 2

    single, ddp = read_metrics(single_dir), read_metrics(ddp_dir)
    assert len(column(ddp, "val/loss")) == len(column(single, "val/loss")) == 2
    # Validation: every window once over both ranks, averaged over all their tokens.
    assert column(ddp, "val/loss") == pytest.approx(column(single, "val/loss"), abs=1e-4)
    # Training: rank zero logs the mean over ranks, not its own half of the batch.
    assert column(ddp, "train/loss") == pytest.approx(column(single, "train/loss"), abs=1e-4)
    assert column(ddp, "tokens_seen") == column(single, "tokens_seen")
    assert column(ddp, "val/loss")[-1] < column(ddp, "val/loss")[0] - 1e-3  # it did train

    # The checkpoint loads into a fresh model and holds the same weights as the single-process run.
    assert_same_weights(ddp_dir, single_dir)


@pytest.mark.e2e
@pytest.mark.xdist_group("single_process_reference")  # one worker runs the reference once
def test_two_machines_started_by_hand_train_like_one_process(tmp_path, single_dir):
    """The README's launch without a cluster manager: train.py on each machine with MASTER_ADDR, MASTER_PORT
    and NODE_RANK (here two "machines" on this one, a device each)."""
    with socket.socket() as probe:  # a free port for node 0's rendezvous
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    nodes = [
        subprocess.Popen(
            [sys.executable, "train.py", f"hydra.run.dir={tmp_path / f'node{rank}'}", *SAME_GLOBAL_BATCH,
             "data.batch_size=4", "logger=csv", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.num_nodes=2"],
            cwd=REPO_ROOT,
            env=clean_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, NODE_RANK=str(rank)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    for node, output in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, output[-3000:]
    assert "MEMBER: 2/2" in outputs[1]
    assert (tmp_path / "node0" / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "node1" / "checkpoints").exists()  # global rank zero alone checkpoints
    assert not (tmp_path / "node1" / "csv").exists()  # and logs (an empty csv/ was left there)
    assert column(read_metrics(tmp_path / "node0"), "val/loss") == pytest.approx(
        column(read_metrics(single_dir), "val/loss"), abs=1e-4
    )
    assert_same_weights(tmp_path / "node0", single_dir)


@pytest.mark.e2e
def test_multirun_with_ddp_runs_each_job_once_with_its_own_ranks(tmp_path):
    """Lightning re-runs the command per rank; in a multirun that would restart the sweep on every rank."""
    sweep_dir = tmp_path / "sweep"
    result = run_script(
        "train.py",
        "-m",
        f"hydra.sweep.dir={sweep_dir}",
        *TINY_DECODER,
        "model.drop_rate=0.0",
        "data=verdict",
        "debug=fast",
        "data.batch_size=2",
        "data.max_length=32",
        "logger=csv",
        *DDP_CPU,
        "optim.lr=1e-4,1e-3",
        timeout=300,
    )
    assert_ok(result)  # also: job 1 started its own rank 1 (it did not wait for one that never comes)
    output = result.stdout + result.stderr
    assert output.count("Launching 2 jobs") == 1  # no rank started a sweep of its own
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1"]
    assert result.stdout.count("run folder:") == 2
    for job in ("0", "1"):
        assert (sweep_dir / job / "checkpoints" / "last.ckpt").is_file()
        assert (sweep_dir / job / "train_ddp_process_1.log").is_file()  # its rank 1 ran in its folder
        tokens = column(read_metrics(sweep_dir / job), "tokens_seen")
        assert tokens[-1] == 4 * 2 * 2 * 32  # 4 steps of 2 ranks x 2 windows of 32 tokens


def test_a_failing_ddp_job_ends_its_sweep_and_leaves_no_process_behind(tmp_path):
    # Jobs fail alone in a sweep, but not one whose ranks Lightning started and watches: when its rank 1
    # exited with the error, Lightning's watcher killed the sweep's process in the middle of the next job
    # (exit 137) and left that job's rank 1 spinning. Such a job ends the sweep with its line, as before.
    sweep_dir = tmp_path / "sweep"
    result = run_script(
        "train.py",
        "-m",
        f"hydra.sweep.dir={sweep_dir}",
        "model=gpt_tiny",
        "data=verdict",
        "debug=fast",
        "data.batch_size=2",
        "data.max_length=32",
        "logger=csv",
        *DDP_CPU,
        "optim.lr=1e9,1e-3",  # job 0 diverges at its first step
        timeout=300,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    # Once: both ranks met it, and each printed it.
    assert len(re.findall(r"^error: job 0 \([^)]*optim.lr=1000000000.0\): train/loss is nan", result.stderr, re.M)) == 1
    assert not (sweep_dir / "1").exists()
    left = [p for p in Path("/proc").glob("[0-9]*") if str(sweep_dir).encode() in _command_line(p)]
    assert not left, [_command_line(p) for p in left]


def _command_line(process: Path) -> bytes:
    try:
        return (process / "cmdline").read_bytes()
    except OSError:  # it ended while we looked
        return b""


def test_a_line_every_rank_of_a_launch_meets_is_printed_by_one_of_them(monkeypatch, tmp_path):
    from gptlab.core import rank_lines

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv(rank_lines.LAUNCH_ID_ENV, raising=False)  # restored after the test
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(rank_lines, "_started_ranks", False)
    rank_lines.name_this_launch()
    assert rank_lines.first_to_say("error: x") and rank_lines.first_to_say("error: x")  # no ranks: one process
    rank_lines.ranks_started()  # rank zero, whose LOCAL_RANK Lightning's launch took back
    assert rank_lines.first_to_say("error: x")
    monkeypatch.setenv("LOCAL_RANK", "1")  # a rank it started, with the launch's name
    assert not rank_lines.first_to_say("error: x")
    assert rank_lines.first_to_say("error: y")  # a line that differs is its own
    rank_lines.name_this_launch()  # the next job of a sweep launches anew: nothing said yet
    assert rank_lines.first_to_say("error: x")
    monkeypatch.delenv(rank_lines.LAUNCH_ID_ENV)  # ranks of another launcher (torchrun): each says its own
    assert rank_lines.first_to_say("error: x") and rank_lines.first_to_say("error: x")


def test_a_new_launch_removes_the_claim_folders_of_launches_that_ended(monkeypatch, tmp_path):
    # Each launch that failed left its folder in $TMPDIR for ever (71 on one test machine after a few days).
    from gptlab.core import rank_lines

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv(rank_lines.LAUNCH_ID_ENV, raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(rank_lines, "_started_ranks", False)
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        folders = {
            "ended": tmp_path / f"gptlab-launch-{int(ended.stdout)}-{'a' * 32}",
            "running": tmp_path / f"gptlab-launch-{running.pid}-{'b' * 32}",
            "named before pids": tmp_path / f"gptlab-launch-{'c' * 32}",
        }
        for folder in folders.values():
            folder.mkdir()
            (folder / "claimed-line").touch()
        rank_lines.name_this_launch()
        rank_lines.ranks_started()
        monkeypatch.setenv("LOCAL_RANK", "1")
        assert rank_lines.first_to_say("error: x") and not rank_lines.first_to_say("error: x")
        left = {path.name for path in tmp_path.iterdir()}
        assert left == {folders["running"].name, f"gptlab-launch-{os.environ[rank_lines.LAUNCH_ID_ENV]}"}
        rank_lines.name_this_launch()  # this process's next launch (a sweep's next job): the last one has ended
        assert {path.name for path in tmp_path.iterdir()} == {folders["running"].name}
    finally:
        running.kill()
        running.wait()


def test_several_nodes_need_a_launcher_or_the_rendezvous_variables(monkeypatch):
    for name in ("MASTER_ADDR", "NODE_RANK", "SLURM_NTASKS", "SLURM_JOB_NAME", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    check_nodes(1)
    with pytest.raises(ConfigError, match="trainer.num_nodes=2 waits for 2 machines"):
        check_nodes(2)  # Lightning would wait in init_process_group for ranks nobody starts
    with monkeypatch.context() as by_hand:
        by_hand.setenv("MASTER_ADDR", "10.0.0.1")
        with pytest.raises(ConfigError):
            check_nodes(2)  # every node would take itself for node 0
        by_hand.setenv("NODE_RANK", "1")
        check_nodes(2)
    with monkeypatch.context() as slurm:
        slurm.setenv("SLURM_NTASKS", "8")
        slurm.setenv("SLURM_JOB_NAME", "train")
        check_nodes(2)  # SLURM starts every node's tasks


def test_validation_windows_are_split_across_ranks_without_repeats():
    class FakeTrainer:
        def __init__(self, rank: int, world_size: int):
            self.global_rank, self.world_size = rank, world_size

    dataset = list(range(15))  # odd: Lightning's DistributedSampler would repeat window 0 on rank 1
    assert validation_sampler(dataset, FakeTrainer(0, 1)) is None
    shares = [list(validation_sampler(dataset, FakeTrainer(rank, 2))) for rank in (0, 1)]
    assert sorted(shares[0] + shares[1]) == dataset


@pytest.mark.parametrize("trainer", ["ddp", "fsdp"])
def test_distributed_trainer_configs_compose_and_build_their_strategy(trainer):
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"trainer={trainer}", "trainer.num_nodes=2", "trainer.devices=4"])
    assert (cfg.trainer.num_nodes, cfg.trainer.devices) == (2, 4)
    strategy = instantiate(cfg.trainer.strategy)  # FSDP needs GPUs to train, not to be configured
    assert type(strategy).__name__ == {"ddp": "DDPStrategy", "fsdp": "FSDPStrategy"}[trainer]


def test_fsdp_shards_the_blocks_of_both_models():
    from gptlab.models.gpt import TransformerBlock

    gpt = build_model(
        {
            "_target_": "gptlab.models.GPT",
            "vocab_size": 50,
            "context_length": 16,
            "emb_dim": 8,
            "n_heads": 2,
            "n_layers": 2,
            "drop_rate": 0.0,
            "qkv_bias": False,
        }
    )
    decoder = build_model(
        {
            "_target_": "gptlab.models.TransformerDecoderLM",
            "vocab_size": 50,
            "context_length": 16,
            "emb_dim": 8,
            "n_heads": 2,
            "n_layers": 2,
        }
    )
    for model in (gpt, decoder):
        blocks = [m for m in model.modules() if isinstance(m, tuple(transformer_block_types()))]
        assert len(blocks) == 2, type(model).__name__
    assert TransformerBlock in transformer_block_types()


def test_fsdp_logs_and_clips_by_the_norm_over_all_shards():
    """Under FSDP a rank's gradients are its shard: the logged grad_norm and the clipping use the norm over
    every rank's shards (FSDP's own reduction), not this rank's. Lightning refuses gradient_clip_val there."""
    from types import SimpleNamespace

    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy

    from gptlab.training.distributed import clip_sharded_gradients
    from gptlab.training.module import LanguageModelModule

    class ShardedRoot(torch.nn.Module):
        """FSDP's root: its clip_grad_norm_ returns the norm reduced over all ranks (here, a given 4.0)."""

        asked = []

        def clip_grad_norm_(self, max_norm):
            self.asked.append(max_norm)
            return torch.tensor(4.0)

    module = LanguageModelModule(
        model=tiny_gpt_config(vocab_size=50, context_length=8, emb_dim=8),
        tokenizer={"kind": "gpt2"},
    )
    for p in module.parameters():
        p.grad = torch.ones_like(p)  # this rank's shard: its own norm is far from 4
    strategy = FSDPStrategy()
    strategy.model = ShardedRoot()
    logged = {}
    module.log = lambda name, value, **_: logged.__setitem__(name, float(value))
    module._trainer = SimpleNamespace(
        strategy=strategy, precision="32-true", global_step=0, precision_plugin=None, max_steps=-1,
        _logger_connector=SimpleNamespace(should_update_logs=True),  # Lightning's rule: this step is logged
    )
    module.on_before_optimizer_step(optimizer=None)
    assert logged["grad_norm"] == 4.0 and strategy.model.asked == [float("inf")]  # measured, not clipped
    module.configure_gradient_clipping(optimizer=None, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
    # Every local gradient scaled by max_norm / global norm (1 / 4), with FSDP's global norm measured once.
    assert {round(v, 5) for p in module.parameters() for v in p.grad.unique().tolist()} == {0.25}
    assert strategy.model.asked == [float("inf")]

    module._trainer = SimpleNamespace(strategy=DDPStrategy())
    assert not clip_sharded_gradients(
        module, 1.0
    )  # DDP: every rank holds whole gradients, the usual clipping
