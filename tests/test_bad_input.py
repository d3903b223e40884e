"""Bad input through the real entry point: one clear line naming the problem and the fix, a non-zero exit,
no traceback, and nothing lost: an existing run folder and its checkpoint stay byte for byte the same."""

from __future__ import annotations

import hashlib
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from cli_runner import IMPORT_TIMES, TINY_GPT_RUN, assert_ok, imported_modules, run_script, run_train
from repo import DATA_DIR

# One worker takes the whole module under `make test` (pytest-xdist), so
# its module fixture's runs (one a case) run once, not once a worker.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("bad_input")]

BASE = [*TINY_GPT_RUN, "logger=csv"]


class Payload:
    """An object a pickle would rebuild by importing and running code: never loaded from a checkpoint."""

    def __reduce__(self):
        return (print, ("this ran while loading a checkpoint",))


def snapshot(folder: Path) -> dict[str, str]:
    """Hash of every file of a run folder, except the two Hydra itself writes before any of our code runs."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".hydra" not in p.parts and p.name != "train.log"
    }


# id -> (overrides; "{run}" is the existing run folder, "{tmp}" a scratch folder), words the message must hold
CASES: dict[str, tuple[list[str], list[str]]] = {
    # Hydra's ValueError traceback named neither the override nor the group's options.
    "group-set-to-null": (["callbacks=null"], ["callbacks=null: callbacks is a config group", "(default, none)", "~callbacks"]),
    "seed-outside-numpys-range": (["seed=-5"], ["seed must be between 0 and 4294967295, got -5"]),
    "unknown-option": (
        ["model=gpt_huge"], ["Could not find 'model/gpt_huge'", "gpt_tiny, hf_causal_lm (pick one with model=NAME)"]
    ),
    # Hydra's own advice, to add the key with +, would have it read by nothing: the closest key instead.
    "unknown-key": (["model.emb_dims=64"], ["model.emb_dims is not a setting of model; did you mean model.emb_dim?"]),
    "group-of-another-command": (
        ["tasks=[lambada]"], ["tasks is not a config group of train.py; its groups: data, model, trainer, optim"]
    ),
    "unknown-top-level-key": (["learning_rate=0.1"], ["learning_rate is not a setting of train.py", "--cfg job"]),
    "added-key-read-by-nothing": (["+optim.lr_max=3"], ["optim.lr_max is not a setting of optim", "read by nothing"]),
    # Skipped without a word: a logger's setting put beside the loggers.
    "setting-beside-the-loggers": (
        ["+logger.flush_logs_every_n_steps=10"],
        ["logger.flush_logs_every_n_steps is not a logger (each key of logger is one: csv)", "logger.csv.flush_logs_every_n_steps"],
    ),
    # A TypeError traceback ("argument of type 'int' is not iterable").
    "setting-beside-the-callbacks": (
        ["+callbacks.every_n_epochs=2"],
        ["callbacks.every_n_epochs is not a callback (each key of callbacks is one: model_checkpoint,", "e.g. callbacks.model_checkpoint.every_n_epochs"],
    ),
    # Skipped without a word: the run trained without the callback the user added.
    "new-callback-without-its-class": (
        ["+callbacks.early_stop={{monitor: val/loss, patience: 3}}"],  # {{ }}: the overrides are str.format()ted,
        ["callbacks.early_stop has settings but no _target_", "+callbacks.early_stop._target_=lightning.pytorch.callbacks.EarlyStopping"],
    ),
    "trainer-argument-lightning-lacks": (
        ["+trainer.profilr=simple"],
        ["trainer.profilr is not a setting of Trainer; did you mean trainer.profiler?"],
    ),
    "wandb-setting-misspelt": (
        ["logger=wandb", "+logger.wandb.entitiy=my-team"],
        ["logger.wandb.entitiy is not a setting of WandbLogger or wandb.init; did you mean logger.wandb.entity?"],
    ),
    "override-hydra-cannot-read": (
        ["callbacks.text_sample.prompt=€"],
        ["Hydra cannot read the override", "'callbacks.text_sample.prompt=\"€\"'"],
    ),
    # Two overrides in one argument (a Makefile's ARGS quoted whole): quoting it further, as was advised, would
    # have made "verdict optim.lr=1e-3" the data option.
    "two-overrides-in-one-argument": (
        ["data=verdict optim.lr=1e-3"],
        ["if it is 2 overrides, pass each as an argument of its own: data=verdict optim.lr=1e-3;", "quote it"],
    ),
    "wrong-type-int": (["trainer.max_steps=abc"], ["trainer.max_steps must be an integer", "'abc'"]),
    "wrong-type-float": (["optim.lr=fast"], ["optim.lr must be a number", "'fast'"]),
    "heads": (
        ["model.n_heads=3"],
        ["model.emb_dim=32 is not divisible by model.n_heads=3", "model.n_heads=2"],
    ),
    "window": (
        ["data.max_length=128"],
        ["data.max_length=128 is longer than model.context_length=64", "lower data.max_length"],
    ),
    "stride-zero": (["data.stride=0"], ["data.stride must be >= 1", "got 0"]),
    "stride-negative": (["data.stride=-4"], ["data.stride must be >= 1", "got -4"]),
    "train-ratio-above-1": (
        ["data.train_ratio=1.5"],
        ["data.train_ratio must be strictly between 0 and 1", "1.5"],
    ),
    "train-ratio-zero": (["data.train_ratio=0"], ["data.train_ratio must be strictly between 0 and 1"]),
    "train-split-too-small": (["data.train_ratio=0.001"], ["the train split has", "raise data.train_ratio"]),
    "val-split-too-small": (
        ["data.train_ratio=0.999"],
        ["the validation split has", "lower data.train_ratio"],
    ),
    "corpus-missing-offline": (
        ["data.data_dir={tmp}/empty"],
        ["could not be downloaded", "put the file there", "GPTLAB_DATA_DIR"],
    ),
    "corpus-checksum": (["data.data_dir={tmp}/corrupt"], ["does not match its sha256", "delete it"]),
    "corpus-empty": (["data.data_dir={tmp}/blank"], ["is empty", "delete it"]),
    "ckpt-garbage": (["ckpt_path={tmp}/garbage.ckpt"], ["not a PyTorch checkpoint", "ckpt_path="]),
    "ckpt-truncated": (["ckpt_path={tmp}/truncated.ckpt"], ["is truncated", "earlier checkpoint"]),
    "ckpt-pickled-code": (["ckpt_path={tmp}/pickled.ckpt"], ["contains pickled Python objects", "refused"]),
    "ckpt-missing": (["ckpt_path={tmp}/nope.ckpt"], ["ckpt_path=", "is not a file"]),
    "ckpt-other-shape": (
        ["ckpt_path={run}/checkpoints/last.ckpt", "model.emb_dim=64"],
        ["another shape", "emb_dim"],
    ),
    "resume-other-shape-in-place": (
        ["hydra.run.dir={run}", "ckpt_path=last", "model.n_layers=3"],
        ["another shape", "n_layers"],
    ),
    "resume-last-without-checkpoint": (["ckpt_path=last"], ["holds no last.ckpt", "hydra.run.dir="]),
    "fresh-run-over-checkpoints": (["hydra.run.dir={run}"], ["already holds checkpoints", "ckpt_path=last"]),
    "no-gpu": (
        ["trainer.accelerator=gpu"],
        ["trainer.accelerator=gpu but PyTorch sees no CUDA GPU", "trainer.accelerator=cpu"],
    ),
    "no-mps": (["trainer.accelerator=mps"], ["no Apple GPU", "trainer.accelerator=cpu"]),
    "fsdp-on-cpu": (["trainer.strategy=fsdp", "trainer.accelerator=cpu"], ["CUDA GPUs only", "trainer=ddp"]),
    "float16-on-cpu": (
        ["trainer.precision=16-true", "trainer.accelerator=cpu"],
        ["trainer.precision=16-true needs a GPU", "bf16-mixed"],
    ),
    "unknown-precision": (["trainer.precision=8"], ["trainer.precision=8 is not a precision", "32-true"]),
    "max-steps-zero": (["trainer.max_steps=0"], ["trainer.max_steps=0 trains nothing", "-1"]),
    "negative-lr": (["optim.lr=-0.001"], ["optim.lr must be positive", "optim.lr=3e-4"]),
    "vocabulary-larger-than-the-tokenizer": (
        ["model.vocab_size=50304"],
        ["model.vocab_size=50304 is larger than the gpt2 tokenizer's 50257 ids", "model.vocab_pad_multiple=64"],
    ),
    # A validation (and its checkpoint) inside gradient accumulation could not be resumed exactly.
    "validation-inside-accumulation": (
        ["trainer.accumulate_grad_batches=2", "trainer.val_check_interval=3"],
        ["trainer.val_check_interval=3 validates every 3 training batches", "trainer.val_check_interval=2 or 4"],
    ),
    "validation-fraction-inside-accumulation": (
        ["trainer.accumulate_grad_batches=2", "trainer.limit_train_batches=5", "trainer.val_check_interval=0.6"],
        ["trainer.val_check_interval=0.6 validates every 3 training batches", "a multiple of 2"],
    ),
    # Lightning refused it only inside fit, in a ValueError traceback (debug=fast's interval on a small corpus).
    "validation-interval-past-the-epoch": (
        ["trainer.val_check_interval=5"],
        ["validates every 5 training batches, but an epoch here has 4 (trainer.limit_train_batches=4)", "=null"],
    ),
    "device-ids-on-the-cpu": (["trainer.devices=[0]", "trainer.accelerator=cpu"], ["trainer.devices=[0] on the CPU", "trainer.devices=2"]),
    "several-nodes-without-a-launcher": (
        ["trainer.num_nodes=2", "trainer.accelerator=cpu"],
        ["trainer.num_nodes=2 waits for 2 machines", "trainer.devices=N"],
    ),
    "split-smaller-than-a-batch-for-each-rank": (
        ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=4", "data.train_ratio=0.05"],
        ["8 windows, 2 for each of 4 ranks, fewer than one batch of data.batch_size=4", "fewer trainer.devices"],
    ),
    # Refused by every DDP rank once fit had started them: the same line once per rank.
    "prompt-outside-a-character-vocabulary-under-ddp": (
        ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "data=shakespeare_char", 'callbacks.text_sample.prompt="~~"'],
        ["characters '~' are not in this model's 65-character vocabulary"],
    ),
    # Not a setting out of range, but the same mistake met by every rank: each printed its line.
    "learning-rate-that-diverges-under-ddp": (
        ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "optim.lr=1e9"],
        ["train/loss is nan at step 1", "Lower optim.lr"],
    ),
    "output-not-writable": (
        ["hydra.run.dir={tmp}/a-file/run"],
        ["cannot create the run folder", "hydra.run.dir=PATH"],
    ),
}


# Cases that are bad input only where a device is missing (on a GPU machine, accelerator=gpu is right).
MACHINE_HAS = {"no-gpu": torch.cuda.is_available, "no-mps": torch.backends.mps.is_available}


@pytest.fixture(scope="module")
def existing_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("existing") / "run"
    assert_ok(run_train(run_dir, *BASE))
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    return run_dir


@pytest.fixture(scope="module")
def scratch(tmp_path_factory, existing_run) -> Path:
    tmp = tmp_path_factory.mktemp("scratch")
    (tmp / "empty").mkdir()
    (tmp / "corrupt").mkdir()
    text = (DATA_DIR / "the-verdict.txt").read_text(encoding="utf-8")
    (tmp / "corrupt" / "the-verdict.txt").write_text(text.replace("Gisburn", "Gisborne"), encoding="utf-8")
    (tmp / "blank").mkdir()
    (tmp / "blank" / "the-verdict.txt").write_bytes(b"")
    (tmp / "garbage.ckpt").write_bytes(b"not a checkpoint at all\n" * 100)
    last = (existing_run / "checkpoints" / "last.ckpt").read_bytes()
    (tmp / "truncated.ckpt").write_bytes(last[: len(last) // 2])
    torch.save({"state_dict": {}, "payload": Payload()}, tmp / "pickled.ckpt")
    (tmp / "a-file").write_text("a file where the run folder would go")
    return tmp


@pytest.fixture(scope="module")
def results(
    existing_run, scratch
) -> tuple[dict[str, subprocess.CompletedProcess], dict[str, str], dict[str, Path]]:
    before = snapshot(existing_run)
    run_dirs = {case: scratch / "runs" / case for case in CASES}

    def run(case: str) -> subprocess.CompletedProcess:
        overrides = [o.format(run=existing_run, tmp=scratch) for o in CASES[case][0]]
        # A later hydra.run.dir wins: cases that target the existing run folder name it themselves.
        return run_train(run_dirs[case], *BASE, *overrides)

    with ThreadPoolExecutor(max_workers=3) as pool:
        outcomes = dict(zip(CASES, pool.map(run, CASES), strict=True))
    return outcomes, before, run_dirs


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_one_clear_line_and_loses_nothing(case, results, existing_run):
    if case in MACHINE_HAS and MACHINE_HAS[case]():
        pytest.skip(f"this machine has what the '{case}' case lacks")
    outcomes, before, run_dirs = results
    result = outcomes[case]
    output = result.stdout + result.stderr
    assert result.returncode == 2, f"exit {result.returncode}\n{output[-3000:]}"
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    for words in CASES[case][1]:
        assert words in errors[0], errors[0]
    assert "this ran while loading a checkpoint" not in output
    # Where the run had started (Hydra wrote its folder), its train.log says why it stopped, as report.py
    # reads a sweep job's failure; it stopped without a word there before.
    if (run_dirs[case] / ".hydra").is_dir():
        assert errors[0] in (run_dirs[case] / "train.log").read_text(), case
    # Nothing lost: the existing run is untouched, and the failed run wrote no checkpoint.
    assert snapshot(existing_run) == before
    assert not (run_dirs[case] / "checkpoints").exists()


def test_help_and_cfg_job_still_work():
    # Hydra's own flags are untouched by the one-line error handling around it.
    help_run = run_script("train.py", "--help")
    assert help_run.returncode == 0 and "Powered by Hydra" in help_run.stdout
    cfg_run = run_script("train.py", "--cfg", "job", "model=gpt_tiny")
    assert cfg_run.returncode == 0 and "emb_dim: 32" in cfg_run.stdout


# Device mistakes need torch alone, and the data and a model built from its config are checked before the
# import too (train.py's preflight): refused before Lightning's import (seconds on a laptop), not after it.
BEFORE_LIGHTNING = [
    "no-gpu", "no-mps", "fsdp-on-cpu", "device-ids-on-the-cpu", "float16-on-cpu",
    "window", "train-split-too-small", "val-split-too-small", "vocabulary-larger-than-the-tokenizer",
]


@pytest.mark.parametrize("case", BEFORE_LIGHTNING)
def test_device_data_and_model_mistakes_are_refused_before_lightning_is_imported(case, tmp_path):
    if case in MACHINE_HAS and MACHINE_HAS[case]():
        pytest.skip(f"this machine has what the '{case}' case lacks")
    overrides, words = CASES[case]
    result = run_train(tmp_path / "run", *BASE, *overrides, python_args=IMPORT_TIMES)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1 and all(w in errors[0] for w in words), result.stderr[-3000:]
    imported = imported_modules(result)
    assert "hydra" in imported and "lightning" not in imported, errors[0]
