"""Checkpoint files (gptlab.checkpoints): one resolver says which file ckpt_path means, for train.py,
generate.py and the export alike; the reader refuses pickled code; a resumed run reads its file once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from compose import compose_train

from gptlab.checkpoints.paths import checkpoint_file
from gptlab.checkpoints.reader import CheckpointError, load_checkpoint_safely
from gptlab.core.errors import ConfigError


@pytest.fixture
def run_dir(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (tmp_path / "checkpoints" / "best.ckpt").write_bytes(b"x")
    return tmp_path


def test_a_file_a_run_folder_its_checkpoints_folder_and_last_all_name_the_same_last_ckpt(run_dir):
    last = run_dir / "checkpoints" / "last.ckpt"
    assert checkpoint_file(last) == last
    assert checkpoint_file(run_dir) == last
    assert checkpoint_file(run_dir / "checkpoints") == last
    assert checkpoint_file("last", run_dir) == last
    assert checkpoint_file(run_dir / "checkpoints" / "best.ckpt") == run_dir / "checkpoints" / "best.ckpt"


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("missing.ckpt", ["does not exist or is not a file", "outputs/DATE/TIME"]),
        ("empty-folder", ["has no last.ckpt"]),
        ("only-best", ["has no last.ckpt", "checkpoints/best.ckpt: pass it, ckpt_path=/"]),
        ("hf-folder", ["Hugging Face model folder", "init_from="]),
    ],
)
def test_what_is_no_checkpoint_is_named_with_the_fix(tmp_path, name, words):
    (tmp_path / "empty-folder").mkdir()
    (tmp_path / "only-best" / "checkpoints").mkdir(parents=True)
    (tmp_path / "only-best" / "checkpoints" / "best.ckpt").write_bytes(b"x")
    (tmp_path / "hf-folder").mkdir()
    (tmp_path / "hf-folder" / "config.json").write_text("{}")
    with pytest.raises(ConfigError) as err:
        checkpoint_file(tmp_path / name)
    for word in words:
        assert word in str(err.value)


def test_a_run_folder_with_only_lightnings_own_checkpoint_names_it_ready_to_pass(tmp_path):
    # callbacks=none: Lightning's ModelCheckpoint writes LOGGER/checkpoints/epoch=E-step=S.ckpt. It was not
    # named (only the folder's top and checkpoints/ were searched), and its "=" needs quotes in an override.
    lightnings = tmp_path / "csv" / "checkpoints" / "epoch=0-step=4.ckpt"
    lightnings.parent.mkdir(parents=True)
    lightnings.write_bytes(b"x")
    with pytest.raises(ConfigError) as err:
        checkpoint_file(tmp_path)
    assert str(err.value).endswith(
        f"it holds csv/checkpoints/epoch=0-step=4.ckpt: pass it, 'ckpt_path=\"{lightnings}\"'"
    )


def test_last_needs_a_run_folder_that_holds_one(tmp_path):
    with pytest.raises(ConfigError, match="holds no last.ckpt"):
        checkpoint_file("last", tmp_path)
    with pytest.raises(ConfigError, match="name it"):
        checkpoint_file("last")


def test_a_resumed_run_reads_its_checkpoint_once(tmp_path, monkeypatch):
    """preflight reads (and checks) the checkpoint; the model check and Lightning's restore reuse that read."""
    from gptlab.training.run import train

    run = ["debug=fast", "logger=csv", "model=gpt_tiny", "data=verdict", "data.batch_size=4", "data.max_length=32"]
    run += ["trainer.accelerator=cpu", "callbacks.text_sample.max_new_tokens=2"]
    train(compose_train(tmp_path, *run, "trainer.max_steps=2"))
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2

    reads = []
    real_load = torch.load

    def counting_load(f, *args, **kwargs):
        reads.append(Path(f).resolve())
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    train(compose_train(tmp_path, *run, "trainer.max_steps=4", "ckpt_path=last"))
    assert reads.count(last.resolve()) == 1
    assert real_load(last, weights_only=True)["global_step"] == 4


class Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_checkpoint_with_pickled_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match="contains pickled Python objects"):
        load_checkpoint_safely(path)
    assert "pickled code ran" not in capsys.readouterr().out


def test_plain_checkpoint_loads(tmp_path):
    path = tmp_path / "ok.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "global_step": 3}, path)
    assert load_checkpoint_safely(path)["global_step"] == 3


@pytest.mark.parametrize("mmap", [False, True], ids=["read", "mapped"])
@pytest.mark.parametrize(
    "content",
    [b"root:x:0:0:root:/root:/bin/bash\n", b"not a checkpoint at all\n" * 100, bytes(range(256)) * 8],
    ids=["a-text-file", "repeated-text", "binary-noise"],
)
def test_a_file_that_is_no_checkpoint_is_one_clear_refusal(tmp_path, content, mmap):
    """Whatever bytes the weights-only unpickler chokes on (its errors differ by content), one message."""
    path = tmp_path / "passwd"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="is truncated or not a PyTorch checkpoint"):
        load_checkpoint_safely(path, mmap=mmap)


def test_a_resume_past_max_time_is_refused_before_it_starts(tmp_path):
    # Lightning's Timer counts the whole run: the resumed run stopped at once, having trained nothing, and
    # said only "Time limit reached".
    from gptlab.training.preflight import check_config

    (tmp_path / "checkpoints").mkdir()
    timer = {"time_elapsed": {"train": 6 * 3600 + 0.4, "validate": 60.0}}
    torch.save({"state_dict": {}, "global_step": 3, "callbacks": {"Timer": timer}}, tmp_path / "checkpoints" / "last.ckpt")
    with pytest.raises(ConfigError) as refused:
        check_config(compose_train(tmp_path, "ckpt_path=last", "trainer.max_time=00:06:00:00"))
    assert str(refused.value) == (
        "trainer.max_time=00:06:00:00 is used up: the run trained for 6:00:00 before this checkpoint, and the "
        "limit counts the whole run, across resumes; raise it to go on (trainer.max_time=00:12:00:00 gives it "
        "as long again)"
    )
    assert check_config(compose_train(tmp_path, "ckpt_path=last", "trainer.max_time={hours: 7}")).resume
    assert check_config(compose_train(tmp_path, "ckpt_path=last")).resume  # no limit: nothing to check
