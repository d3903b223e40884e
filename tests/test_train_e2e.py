"""train.py as a user runs it: subprocesses on tiny models and the real corpora."""

from __future__ import annotations

import re

import pytest
import torch
from cli_runner import (
    TINY_DECODER,
    TINY_GPT_RUN,
    TINY_RUN,
    assert_finite,
    assert_ok,
    clean_env,
    last_value,
    read_metrics,
    run_script,
    run_train,
)
from omegaconf import OmegaConf

pytestmark = pytest.mark.e2e

MODELS = {"gpt_tiny": ["model=gpt_tiny"], "decoder": TINY_DECODER}


@pytest.mark.parametrize("data", ["verdict", "shakespeare", "shakespeare_char"])
@pytest.mark.parametrize("model", list(MODELS))
def test_train_writes_checkpoints_metrics_and_samples(tmp_path, model, data):
    run_dir = tmp_path / "run"
    result = run_train(run_dir, *MODELS[model], f"data={data}", *TINY_RUN, "logger=csv")
    assert_ok(result)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    rows = read_metrics(run_dir)
    assert_finite(last_value(rows, "val/ppl"))
    assert last_value(rows, "tokens_seen") == 4 * 4 * 32  # 4 steps of 4 windows of 32 tokens
    assert (run_dir / "samples.txt").read_text().count("Every effort moves you") >= 1
    assert f"run folder: {run_dir}" in result.stdout
    assert "best val/loss:" in result.stdout
    # Each of Lightning's lines once (it has a console of its own beside Hydra's), and no warning about
    # Lightning's own code, and no advert for Lightning's cloud logger.
    output = result.stdout + result.stderr
    assert output.count("Seed set to") == 1 and output.count("`Trainer.fit` stopped") == 1, output[-3000:]
    assert "LeafSpec" not in output
    assert "litlogger" not in output and "💡" not in (run_dir / "train.log").read_text()
    # Nor Lightning's note that it keeps our ModelSummary, nor its FLOPs, never counted ("0  Total Flops").
    assert "Trainer already configured" not in output and "Total params" in output
    assert "Flops" not in output and "FLOPs" not in output
    assert "note: each validation" not in output  # 2 validation batches against 2 training ones between
    if data == "shakespeare_char":  # the character vocabulary travels with the checkpoint
        assert_generates(run_dir / "checkpoints" / "last.ckpt", "ROMEO:")


def test_a_validation_longer_than_the_training_between_two_is_noted_with_the_limit_that_bounds_it(tmp_path):
    # debug=fast validates every 2 batches; the whole validation split of Tiny Shakespeare in windows of 32
    # is 71 batches of 16 here (Lightning would score them all without a word, each time).
    run = ["model=gpt_tiny", "data=shakespeare", *TINY_RUN, "data.batch_size=16", "logger=csv"]
    result = run_train(tmp_path / "run", *run, "trainer.limit_val_batches=1.0")
    assert_ok(result)
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: each validation")]
    assert len(notes) == 1, result.stderr[-3000:]
    assert "scores 71 batches of the validation split, 36x the 2 training batches" in notes[0]
    assert "trainer.limit_val_batches=2 scores the first 2 each time" in notes[0]


def test_the_validation_cost_note_comes_where_validation_outlasts_the_training_between_two():
    from gptlab.training.validation_cost import validation_cost_note

    assert validation_cost_note(val_batches=30, between=10) is None  # about as long as the training: no note
    assert "31 batches of the validation split, 3x the 10 training" in validation_cost_note(31, 10)
    assert "trainer.limit_val_batches=200 scores the first 200" in validation_cost_note(14_800, 1_000)
    assert validation_cost_note(500, 0) is None  # no validation during training
    # A mixture validates each source by its own loader, and the limit is each loader's.
    assert "trainer.limit_val_batches=100 scores the first 100 of each of the 2 sources each time" in validation_cost_note(14_800, 1_000, 2)


def test_a_character_model_of_any_corpus_gets_the_vocabulary_of_its_characters(tmp_path, verdict_text):
    run_dir = tmp_path / "run"
    result = run_train(run_dir, "model=gpt_tiny", "data=verdict", "data.tokenizer=char", *TINY_RUN, "logger=csv")
    assert_ok(result)  # it samples text at every validation
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["model"]["vocab_size"] == len(set(verdict_text))
    # The window it trained on (data.max_length=32 of gpt_tiny's 64 positions) bounds generation.
    assert checkpoint["hyper_parameters"]["train_window"] == 32
    assert_generates(run_dir / "checkpoints" / "last.ckpt", "Every effort")


def test_debug_overfit_trains_one_batch_until_its_loss_falls_and_checkpoints(tmp_path):
    # Lightning rebuilds the training loader over the first batches in order (a SequentialSampler), which
    # had no resume position: the first checkpoint ended the run in an AttributeError.
    run_dir = tmp_path / "run"
    overfit = ["debug=overfit", "trainer.max_epochs=20", "optim.lr=3e-3", "data.batch_size=4", "data.max_length=32"]
    assert_ok(run_train(run_dir, "model=gpt_tiny", "data=verdict", *overfit, "logger=csv"))
    losses = [float(r["train/loss"]) for r in read_metrics(run_dir) if r.get("train/loss")]
    assert len(losses) == 20 and losses[-1] < 0.9 * losses[0], losses
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "checkpoints" / "best.ckpt").is_file()


def test_callbacks_none_reports_lightnings_own_checkpoint_as_what_it_is(tmp_path):
    # Lightning adds a ModelCheckpoint without a monitor: its file holds the final weights. It was reported
    # as the best checkpoint and validated again after the run (a best/val_loss of the final weights).
    run_dir = tmp_path / "run"
    result = run_train(run_dir, *TINY_GPT_RUN, "callbacks=none", "logger=csv")
    assert_ok(result)
    saved = list(run_dir.rglob("*.ckpt"))
    assert len(saved) == 1, saved
    assert f"checkpoint: {saved[0]} (Lightning's own, of the final weights)" in result.stdout
    assert "best checkpoint:" not in result.stdout
    assert not any(r.get("best/val_loss") for r in read_metrics(run_dir))
    # The summary Lightning adds printed FLOPs it never counted (all zeros); its ModelCheckpoint came with
    # an advert for litmodels.
    output = result.stdout + result.stderr
    assert "Total params" in output and "FLOPs" not in output and "Flops" not in output
    assert "💡" not in output and "litmodels" not in output


def assert_generates(ckpt, prompt: str) -> None:
    result = run_script("generate.py", f"ckpt_path={ckpt}", f"prompt={prompt}", "max_new_tokens=12", "temperature=0")
    assert_ok(result)
    text = result.stdout.split("\n" + "-" * 40)[0]  # generate.py ends each text with a separator line
    assert text.startswith(prompt) and len(text) > len(prompt)


def test_generate_continues_a_prompt_from_a_trained_checkpoint(wandb_run):
    run_dir, _ = wandb_run
    assert_generates(run_dir / "checkpoints" / "best.ckpt", "Every effort moves you")


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory):
    """One run with the default logger (wandb): no API key here, so it must go offline on its own."""
    run_dir = tmp_path_factory.mktemp("wandb") / "run"
    result = run_train(run_dir, "model=gpt_tiny", "data=verdict", *TINY_RUN)
    assert_ok(result)
    return run_dir, result


def test_wandb_goes_offline_without_an_api_key_and_says_how_to_sync(wandb_run):
    run_dir, result = wandb_run
    [offline_run] = (run_dir / "wandb").glob("offline-run-*")
    assert "logging offline" in result.stdout
    assert f"wandb sync {offline_run}" in result.stdout
    # The full resolved config went to wandb (offline, it lives in the run's record file until synced),
    # and the metrics are also kept locally as CSV.
    [record_file] = offline_run.glob("run-*.wandb")
    assert b"gptlab.models.GPT" in record_file.read_bytes() and b"the-verdict" in record_file.read_bytes()
    assert_finite(last_value(read_metrics(run_dir), "val/loss"))


def test_wandb_mode_disabled_turns_wandb_off_instead_of_logging_offline(tmp_path, monkeypatch):
    # With no API key the run was forced offline, and Lightning's offline switch (WANDB_MODE=dryrun)
    # overrode wandb's own off switch: a wandb run was written anyway.
    result = run_train(
        tmp_path / "run", "model=gpt_tiny", "data=verdict", *TINY_RUN, env=clean_env(WANDB_MODE="disabled")
    )
    assert_ok(result)
    assert "logging offline" not in result.stdout and "wandb sync" not in result.stdout
    assert not (tmp_path / "run" / "wandb").exists()
    assert_finite(last_value(read_metrics(tmp_path / "run"), "val/loss"))  # the CSV copy is kept
    from gptlab.training import loggers

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(loggers, "has_wandb_credentials", lambda: False)
    wandb = OmegaConf.create({"_target_": "lightning.pytorch.loggers.WandbLogger", "offline": False})
    assert loggers.wandb_settings(wandb.copy()).offline  # no key: offline, as before
    assert not loggers.wandb_settings(OmegaConf.merge(wandb, {"mode": "disabled"})).offline  # +logger.wandb.mode


def test_resume_from_checkpoint_continues_the_step_count(tmp_path, wandb_run):
    first_dir, _ = wandb_run
    run_dir = tmp_path / "resumed"
    result = run_train(
        run_dir,
        "model=gpt_tiny",
        "data=verdict",
        *TINY_RUN,
        "logger=csv",
        f"ckpt_path={first_dir / 'checkpoints' / 'last.ckpt'}",
        "trainer.max_steps=6",
        "trainer.max_epochs=3",
    )
    assert_ok(result)
    steps = [int(r["step"]) for r in read_metrics(run_dir) if r.get("train/loss")]
    assert steps[0] == 4 and steps[-1] == 5  # picks up after the 4 steps of the first run


def test_multirun_sweep_runs_each_job_in_its_own_folder(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_script(
        "train.py",
        "-m",
        f"hydra.sweep.dir={sweep_dir}",
        "optim.lr=1e-4,3e-4",
        "model=gpt_tiny",
        "data=verdict",
        *TINY_RUN,
    )
    assert_ok(result)
    for job in ("0", "1"):
        assert (sweep_dir / job / "checkpoints" / "last.ckpt").is_file()
        assert_finite(last_value(read_metrics(sweep_dir / job), "val/ppl"))
        # One wandb run per job, named by its overrides and grouped by the sweep.
        [record_file] = (sweep_dir / job / "wandb").glob("offline-run-*/run-*.wandb")
        record = record_file.read_bytes()
        assert f"optim.lr={['0.0001', '0.0003'][int(job)]}".encode() in record
        assert f"{tmp_path.name}_sweep".encode() in record
    lrs = [OmegaConf.load(sweep_dir / job / ".hydra" / "config.yaml").optim.lr for job in "01"]
    assert lrs == [1e-4, 3e-4]
    # It ends naming its folder and the command that compares its jobs (it ended on its last job's lines).
    last = result.stdout.strip().splitlines()[-1]
    assert last == f"sweep folder: {sweep_dir} (2 jobs); compare them: python report.py sweep_dir={sweep_dir}"
    assert_ok(run_script("report.py", last.split("python report.py ")[1]))
    assert (sweep_dir / "report.md").is_file()


def test_init_from_a_hugging_face_folder_starts_from_its_weights(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from gptlab.hub.gpt2_import import load_pretrained_gpt

    torch.manual_seed(0)
    hf_dir = tmp_path / "tiny-gpt2"
    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64)).save_pretrained(hf_dir)
    run_dir = tmp_path / "run"
    # A learning rate too small to move the weights: the checkpoint must hold the imported ones.
    result = run_train(run_dir, f"init_from={hf_dir}", "data=verdict", *TINY_RUN, "logger=csv", "optim.lr=1e-12")
    assert_ok(result)
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["model"]["emb_dim"] == 32
    expected, _ = load_pretrained_gpt(str(hf_dir))
    for name, value in expected.state_dict().items():
        assert torch.allclose(checkpoint["state_dict"][f"model.{name}"], value, atol=1e-6), name


def test_init_from_needs_gpt2_tokens(tmp_path):
    result = run_train(tmp_path / "run", "init_from=gpt2", "data=shakespeare_char", "debug=fast", "logger=csv")
    assert result.returncode == 2
    assert "error: init_from=gpt2 needs GPT-2 BPE data" in result.stderr


def test_a_run_stopped_by_max_time_says_how_to_train_on_and_its_resume_past_it_is_refused(tmp_path):
    # Lightning's Timer counts the whole run: the same command again stopped at once, having trained nothing,
    # and nothing said so or how to go on.
    run_dir = tmp_path / "run"
    run = ["model=gpt_tiny", "data=verdict", "data.batch_size=4", "data.max_length=32", "logger=csv"]
    run += ["trainer.max_epochs=100000", "trainer.max_steps=100000000", "trainer.enable_progress_bar=false"]
    stopped = run_train(run_dir, *run, "trainer.max_time=00:00:00:01")
    assert_ok(stopped)
    line = stopped.stdout.strip().splitlines()[-1]
    # The timer is read after each batch: a slow machine may stop past the second.
    said = re.fullmatch(
        r"stopped by trainer.max_time=00:00:00:01 after 0:00:0(\d) of training; to train as long again: "
        rf"python train.py .* trainer.max_time=00:00:00:0(\d) hydra.run.dir={run_dir} ckpt_path=last", line
    )
    assert said and int(said[2]) == int(said[1]) + 1, line

    again = run_train(run_dir, *run, "trainer.max_time=00:00:00:01", "ckpt_path=last")
    assert again.returncode == 2
    assert "error: trainer.max_time=00:00:00:01 is used up: the run trained for 0:00:01" in again.stderr
    step = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert_ok(run_train(run_dir, *run, f"trainer.max_time=00:00:00:0{said[2]}", "ckpt_path=last"))  # as printed
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] > step


def tensorboard_scalars(folder) -> dict[str, dict[int, float]]:
    """tag -> {step: value} from a TensorBoard event file (TFRecords of Event protos, read with tensorboardX's)."""
    import struct

    from tensorboardX.proto import event_pb2

    [events] = folder.glob("events.out.tfevents.*")
    data, at, scalars = events.read_bytes(), 0, {}
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at : at + 8])  # then a CRC of the length, the event, its CRC
        event = event_pb2.Event.FromString(data[at + 12 : at + 12 + length])
        at += 16 + length
        for value in event.summary.value:
            scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


def test_logger_tensorboard_writes_the_runs_curves_and_says_where(tmp_path):
    # logger=tensorboard was a listed option that no test ran.
    run_dir = tmp_path / "run"
    result = run_train(run_dir, *TINY_GPT_RUN, "logger=tensorboard")
    assert_ok(result)
    assert f"tensorboard: view with `tensorboard --logdir {run_dir / 'tensorboard'}" in result.stdout
    scalars = tensorboard_scalars(run_dir / "tensorboard")
    rows = read_metrics(run_dir)  # the CSV copy: the same values at the same steps
    for tag in ("train/loss", "val/loss", "lr", "grad_norm"):
        logged = {int(float(r["step"])): float(r[tag]) for r in rows if r.get(tag)}
        assert logged and scalars[tag] == pytest.approx(logged, rel=1e-6), tag
    assert "hp_metric" not in scalars  # Lightning's placeholder (-1), shown as the run's result otherwise
