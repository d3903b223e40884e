"""One resolver says which checkpoint file ckpt_path means, for train.py, generate.py and the export alike."""

from __future__ import annotations

import pytest

from gptlab.checkpoints.paths import checkpoint_file
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
        ("only-best", ["has no last.ckpt", "best.ckpt: pass one of them"]),
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


def test_last_needs_a_run_folder_that_holds_one(tmp_path):
    with pytest.raises(ConfigError, match="holds no last.ckpt"):
        checkpoint_file("last", tmp_path)
    with pytest.raises(ConfigError, match="name it"):
        checkpoint_file("last")
