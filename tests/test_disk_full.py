"""A file system that fills up during a run: one line naming the folder, the earlier files intact, and for a
training run the command that resumes it. The full disk is the kernel's own: writes to /dev/full fail with
ENOSPC, which torch.save reports as a RuntimeError of its own ("unexpected pos ...")."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile

import pytest
import torch
from cli_runner import TINY_GPT_RUN, clean_env
from repo import REPO_ROOT

from gptlab.core import files
from gptlab.core.errors import GptlabError, NoSpaceLeft

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")


def full_disk_for(monkeypatch, name: str) -> None:
    """The temporary file of ``name``'s next atomic write goes to /dev/full."""
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        fd, path = real_mkstemp(*args, **kwargs)
        if kwargs.get("prefix") == f".{name}.":
            os.dup2(os.open("/dev/full", os.O_WRONLY), fd)
        return fd, path

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("write", ["torch", "bytes"])
def test_a_full_disk_is_one_line_and_the_earlier_file_stays(tmp_path, monkeypatch, write):
    path = tmp_path / "last.ckpt"
    files.atomic_torch_save({"step": 1}, path)
    full_disk_for(monkeypatch, "last.ckpt")
    with pytest.raises(NoSpaceLeft) as err:
        if write == "torch":  # torch.save's own error says "unexpected pos", not why
            files.atomic_torch_save({"step": 2, "weights": torch.zeros(100_000)}, path)
        else:
            files.atomic_write_bytes(b"x" * 100_000, path)
    message = str(err.value)
    assert message.startswith(f"no space left on the file system of {tmp_path} to write last.ckpt (")
    assert message.endswith("free); what was written before is intact; free some space (or write elsewhere) and run again")
    assert isinstance(err.value, GptlabError) and isinstance(err.value, OSError)  # the token cache goes on without
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary file left


def test_an_export_that_does_not_fit_is_one_line_and_the_earlier_folder_stays(tmp_path):
    out = tmp_path / "hf_model"
    out.mkdir()
    (out / "config.json").write_text("{}")
    refused = pytest.raises(NoSpaceLeft, match=f"no space left on the file system of {tmp_path} to write hf_model ")
    with refused, files.folder_written_whole(out) as fresh:
        os.symlink("/dev/full", fresh / "model.bin")
        (fresh / "model.bin").write_bytes(b"x" * 100_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf_model"]
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]


def test_safetensors_full_disk_error_is_known_for_what_it_is():
    # safetensors 0.8 writes through a temporary file of its own (a /dev/full link is replaced, not written),
    # and reports a full disk as its own error: this message, met on a full tmpfs by export.py.
    from safetensors import SafetensorError

    error = SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert files.out_of_space(error)
    assert not files.out_of_space(SafetensorError("Error while serializing: I/O error: Permission denied (os error 13)"))


DISK_FILLS_UP = """
import os, runpy, sys, tempfile
real_mkstemp, fit = tempfile.mkstemp, [int(os.environ["CHECKPOINTS_THAT_FIT"])]
def mkstemp(*args, **kwargs):
    fd, path = real_mkstemp(*args, **kwargs)
    # A checkpoint's temporary file (gptlab.core.files), or another file's where FILLS_UP_AT names it.
    if str(kwargs.get("prefix")).endswith(os.environ.get("FILLS_UP_AT", ".ckpt.")):
        if fit[0] <= 0:
            os.dup2(os.open("/dev/full", os.O_WRONLY), fd)
        fit[0] -= 1
    return fd, path
tempfile.mkstemp = mkstemp
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def train_on_a_filling_disk(run_dir, checkpoints_that_fit: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", DISK_FILLS_UP, "train.py", *TINY_GPT_RUN, "logger=csv", f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=600,
        env=clean_env(CHECKPOINTS_THAT_FIT=str(checkpoints_that_fit)),
    )


def test_a_run_whose_disk_fills_up_says_so_in_one_line_and_resumes_with_the_command_it_gives(tmp_path):
    # debug=fast validates at steps 2 and 4: best.ckpt and last.ckpt fit at step 2, best.ckpt at step 4 does not.
    run_dir = tmp_path / "run"
    result = train_on_a_filling_disk(run_dir, checkpoints_that_fit=2)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "unexpected pos" not in result.stderr, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    checkpoints = run_dir / "checkpoints"
    assert line.startswith(f"error: no space left on the file system of {checkpoints} to write best.ckpt ("), line
    assert f"free); what was written before is intact; free some space, then resume from {checkpoints / 'last.ckpt'} with: python train.py " in line
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]  # no temporary file left
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 2

    command = shlex.split(line.split(" with: ", 1)[1])
    assert command[:2] == ["python", "train.py"] and command[-1] == "ckpt_path=last"
    resumed = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True, cwd=REPO_ROOT,
                             env=clean_env(), timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 4

    # eval.py's results file on a full disk: the table printed, then the one line naming the file (it was a
    # plain write, whose error names none, and a kill mid-write left half a JSON for report.py to read).
    eval_dir = tmp_path / "eval"
    evaluated = subprocess.run(
        [sys.executable, "-c", DISK_FILLS_UP, "eval.py", f"ckpt_path={run_dir}", f"hydra.run.dir={eval_dir}"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=600,
        env=clean_env(CHECKPOINTS_THAT_FIT="0", FILLS_UP_AT=".eval_results.json."),
    )
    assert evaluated.returncode == 2 and "Traceback" not in evaluated.stderr, evaluated.stderr[-3000:]
    assert "perplexity/ppl" in evaluated.stdout
    line = evaluated.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: no space left on the file system of {eval_dir} to write eval_results.json ("), line
    assert not (eval_dir / "eval_results.json").exists() and not list(eval_dir.glob(".eval_results.json.*"))


def test_a_run_whose_first_checkpoint_does_not_fit_says_none_was_saved(tmp_path):
    result = train_on_a_filling_disk(tmp_path / "run", checkpoints_that_fit=0)
    assert result.returncode == 2, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: no space left on the file system of ") and line.endswith(
        "no checkpoint of this run was saved: free some space (or set hydra.run.dir elsewhere) and start again"
    ), line


def test_a_full_disk_met_by_another_write_of_the_run_is_one_line_too(tmp_path):
    # The text samples are appended to samples.txt (not written atomically): here it is /dev/full.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "samples.txt").symlink_to("/dev/full")
    result = train_on_a_filling_disk(run_dir, checkpoints_that_fit=100)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    # It said "no space left on the disk ([Errno 28] No space left on device)", naming no file.
    assert line.startswith(f"error: no space left on the file system of {run_dir} to write samples.txt ("), line
    assert "what it held before is kept; " in line, line  # and the way on (here: no checkpoint was saved yet)
