"""A run resumed with another data.batch_size, or on another number of processes (a job requeued on fewer
GPUs), goes on at the place of the epoch's order where the checkpoint was taken: no window twice, none
skipped (but the last partial batch, dropped as always)."""

from __future__ import annotations

import contextlib

import lightning as L
import pytest
import torch
from trainers import quiet_trainer

from gptlab.data.sampler import ResumableDataLoader, ResumableRandomSampler
from gptlab.data.window_datamodule import WindowDataModule
from gptlab.training.resume import ResumeAfterValidation, ResumedDataPosition

WINDOWS = 40


class IndexData(WindowDataModule):
    """Windows that are their own index, so a run's batches say which windows it trained on."""

    name = "indices"

    def load_tokenizer(self) -> None:
        pass

    def make_datasets(self):
        return list(range(WINDOWS)), list(range(4))


class Recorder(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[int] = []

    def training_step(self, batch, batch_idx):
        self.seen += batch.tolist()
        return (self.weight * batch.float()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


class Crash(Exception):
    pass


class CheckpointThenCrash(L.Callback):
    def __init__(self, step: int, path):
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)
            raise Crash


def windows_trained(batch_size: int, ckpt=None, crash_at: int | None = None, save=None) -> list[int]:
    """The windows one epoch of a run trains on, in order, until it ends or crashes after saving."""
    module = Recorder()
    callbacks = [ResumeAfterValidation(), ResumedDataPosition()]
    if crash_at is not None:
        callbacks.append(CheckpointThenCrash(crash_at, save))
    trainer = quiet_trainer(max_epochs=1, limit_val_batches=0, callbacks=callbacks)
    with contextlib.suppress(Crash):
        trainer.fit(module, datamodule=IndexData(batch_size=batch_size, max_length=1, seed=3), ckpt_path=ckpt)
    return module.seen


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("sizes", [(4, 4, 4), (4, 2, 2), (2, 4, 4), (4, 3, 5)])
def test_another_batch_size_goes_on_where_the_checkpoint_was(tmp_path, sizes):
    # Lightning's count of the epoch's batches was the old run's: the epoch ended early (windows never
    # trained) or late, and the next checkpoint saved count x new batch size, which was not the position.
    first, second, third = sizes
    whole = windows_trained(4)
    trained = windows_trained(first, crash_at=3, save=tmp_path / "a.ckpt")
    trained += windows_trained(second, tmp_path / "a.ckpt", crash_at=7, save=tmp_path / "b.ckpt")
    trained += windows_trained(third, tmp_path / "b.ckpt")
    assert trained == whole[: len(trained)]
    assert WINDOWS - len(trained) < third  # all but the last partial batch


def loader(rank: int, ranks: int, batch_size: int, consumed_batches: int) -> ResumableDataLoader:
    sampler = ResumableRandomSampler(60, seed=3, rank=rank, num_replicas=ranks)
    return ResumableDataLoader(
        list(range(60)), sampler=sampler, consumed_batches=lambda: consumed_batches, batch_size=batch_size
    )


@pytest.mark.parametrize("ranks", [1, 3, 4])
def test_a_position_saved_by_two_ranks_goes_on_with_any_number_of_ranks(ranks):
    # The position was each rank's count: on one rank, half of the windows already trained came again.
    order = ResumableRandomSampler(60, seed=3).permutation(0).tolist()
    saved = loader(0, 2, 4, consumed_batches=3).state_dict()  # 2 ranks x 3 batches of 4: order[:24]
    assert saved == {"epoch": 0, "consumed_samples": 12, "world_size": 2, "batches": 3, "windows": 60, "seed": 3}
    loaders = [loader(rank, ranks, 2, consumed_batches=0) for rank in range(ranks)]
    for resumed in loaders:
        resumed.load_state_dict(saved)
    rest = [window for resumed in loaders for window in resumed.sampler]
    assert sorted(rest) == sorted(order[24 : 60 - 60 % ranks])
    assert loaders[0].batch_count_shift == 24 // ranks // 2 - 3  # Lightning's count moves to this run's batches
    assert loaders[0].resumed_elsewhere == (
        f"resumed on {ranks} process{'es' if ranks > 1 else ''} of data.batch_size=2 from a checkpoint of "
        f"2 processes: epoch 0 goes on after the 24 windows trained (at batch {24 // ranks // 2})"
    )


def test_an_older_checkpoints_position_reads_as_before():
    # Saved before "world_size" and "batches": this run's settings, the position as it was.
    resumed = loader(0, 1, 4, consumed_batches=0)
    resumed.load_state_dict({"epoch": 2, "consumed_samples": 12})
    assert resumed.batch_count_shift == 0 and resumed.resumed_elsewhere is None and resumed.order_changed is None
    assert list(resumed.sampler) == resumed.sampler.permutation(2).tolist()[12:]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_resume_with_other_windows_or_another_seed_warns_that_the_order_is_not_the_checkpoints(tmp_path, capsys):
    # The saved position was applied to whatever order this run drew: windows twice or never, unsaid.
    windows_trained(4, crash_at=3, save=tmp_path / "a.ckpt")
    capsys.readouterr()
    module, data = Recorder(), IndexData(batch_size=4, max_length=1, seed=4)
    quiet_trainer(max_epochs=1, limit_val_batches=0, callbacks=[ResumedDataPosition()]).fit(
        module, datamodule=data, ckpt_path=tmp_path / "a.ckpt"
    )
    assert capsys.readouterr().err.splitlines()[0] == (
        "warning: the training windows are not the checkpoint's (40 windows in the order of seed 3, now 40 of "
        "seed 4: the corpus, data.max_length, data.stride or seed changed); epoch 0 goes on at the same "
        "position of another order, so until it ends some windows come twice and others not at all"
    )
    resumed = loader(0, 1, 4, consumed_batches=0)
    resumed.load_state_dict({**loader(0, 1, 4, consumed_batches=2).state_dict(), "windows": 61})
    assert "(61 windows in the order of seed 3, now 60 of seed 3" in resumed.order_changed
