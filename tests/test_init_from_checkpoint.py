"""A new run from the weights of an earlier one: ``train.py init_from=<a gptlab run folder or .ckpt>`` (pretrain on
one corpus, go on with another), with a fresh optimizer, schedule and step count. ``init_from`` took only GPT-2
names and Hugging Face folders, and ``ckpt_path=`` resumes the earlier run itself (its optimizer, its step)."""

from __future__ import annotations

import pytest
import torch
from cli_runner import TINY_RUN, assert_ok, run_script, run_train
from compose import compose_train

from gptlab.core.errors import ConfigError
from gptlab.models.factory import data_and_start_model, positions_trained

CHAR_RUN = ["model=gpt_tiny", "data=shakespeare_char", *TINY_RUN, "logger=csv"]


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pretrained") / "run"
    assert_ok(run_train(run_dir, *CHAR_RUN, "data.max_length=16"))
    return run_dir


def model_weights(checkpoint: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}


@pytest.mark.e2e
def test_a_run_starts_from_a_runs_weights_with_its_own_step_count_and_model(pretrained_run, tmp_path):
    # lr 1e-12: the weights the new run saves are the ones it started from. model=gpt_small is not what the
    # checkpoint holds: the shape comes from the checkpoint, as with init_from=gpt2.
    result = run_train(
        tmp_path / "next", *CHAR_RUN, "model=gpt_small", f"init_from={pretrained_run}",
        "optim.lr=1e-12", "scheduler=constant", "trainer.max_steps=2",
    )
    assert_ok(result)
    assert f"init_from={pretrained_run}: starting from its weights, step 4" in result.stdout
    started = torch.load(tmp_path / "next" / "checkpoints" / "last.ckpt", weights_only=True)
    earlier = torch.load(pretrained_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert started["global_step"] == 2  # its own count, not the earlier run's 4 + 2
    assert started["hyper_parameters"]["model"] == earlier["hyper_parameters"]["model"]
    before, after = model_weights(earlier), model_weights(started)
    assert after.keys() == before.keys()
    assert all(torch.allclose(after[k], before[k], rtol=0, atol=1e-8) for k in before)
    # Positions 16..31 are trained now (window 32); the earlier run reached 16.
    assert started["hyper_parameters"]["train_window"] == 32


@pytest.mark.e2e
def test_a_run_from_a_runs_weights_takes_the_dropout_the_command_line_gives(pretrained_run, tmp_path):
    # The checkpoint's model was trained without dropout (gpt_tiny); going on with little data wants some.
    result = run_train(
        tmp_path / "next", *CHAR_RUN, f"init_from={pretrained_run}", "model.drop_rate=0.3", "trainer.max_steps=2"
    )
    assert_ok(result)
    started = torch.load(tmp_path / "next" / "checkpoints" / "last.ckpt", weights_only=True)
    earlier = torch.load(pretrained_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert earlier["hyper_parameters"]["model"]["drop_rate"] == 0.0
    assert started["hyper_parameters"]["model"] == {**earlier["hyper_parameters"]["model"], "drop_rate": 0.3}


def test_model_settings_a_runs_weights_fix_are_refused_and_dropout_is_taken(pretrained_run, tmp_path):
    from gptlab.checkpoints.loading import load_checkpoint_model
    from gptlab.models.factory import trained_model_changes

    cfg = compose_train(tmp_path, "data=shakespeare_char", "model.drop_rate=0.25", "model.n_layers=3", f"init_from={pretrained_run}")
    # Before, any model.KEY= beside init_from=<run> was read by nothing, without a word.
    with pytest.raises(ConfigError, match="model.n_layers=3 does not apply with init_from=.*only model.drop_rate, model.attn_impl, model.fused_loss can"):
        trained_model_changes(cfg, ["model=gpt_small", "model.n_layers=3"])
    changes = trained_model_changes(cfg, ["model=gpt_small", "model.drop_rate=0.25"])  # model=NAME: not read
    assert changes == {"drop_rate": 0.25}
    model, _, _ = load_checkpoint_model(pretrained_run, key="init_from", model_changes=changes)
    assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {0.25}
    # How it computes what the weights define can change too.
    cfg = compose_train(tmp_path, "data=shakespeare_char", "model.fused_loss=false", f"init_from={pretrained_run}")
    changes = trained_model_changes(cfg, ["model.fused_loss=false"])
    model, _, _ = load_checkpoint_model(pretrained_run, key="init_from", model_changes=changes)
    assert changes == {"fused_loss": False} and model.cfg.fused_loss is False


def test_gpt2_weights_are_computed_as_the_config_says(tmp_path):
    # init_from=gpt2 (or a Hugging Face folder) took model.drop_rate from the config, but built the GPT with
    # the default attention and loss whatever model.attn_impl and model.fused_loss said.
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, n_positions=64)).save_pretrained(tmp_path / "hf")
    cfg = compose_train(
        tmp_path, "data=verdict", "data.max_length=32", f"init_from={tmp_path / 'hf'}",
        "model.fused_loss=false", "model.attn_impl=manual", "model.drop_rate=0.0",
    )
    _, model, model_cfg = data_and_start_model(cfg)
    assert (model.cfg.fused_loss, model.cfg.attn_impl, model.cfg.drop_rate) == (False, "manual", 0.0)
    assert (model_cfg["fused_loss"], model_cfg["attn_impl"]) == (False, "manual")  # and so is the checkpoint's


def test_the_window_trained_is_the_longer_of_the_checkpoints_and_this_runs(pretrained_run, tmp_path):
    cfg = compose_train(tmp_path, "data=shakespeare_char", "data.max_length=8", f"init_from={pretrained_run}")
    datamodule, model, model_cfg = data_and_start_model(cfg)
    assert datamodule.max_length == 8
    assert positions_trained(cfg, datamodule, model_cfg, model) == 16


def test_a_character_model_goes_on_with_new_text_in_its_characters(pretrained_run, tmp_path, shakespeare_text):
    """Pretrain on one text, go on with another: it was refused unless the new text had exactly the same
    characters; now it is read with the checkpoint's vocabulary (the same ids for the same characters)."""
    speech = shakespeare_text[-4000:]
    assert len(set(speech)) < 65
    (tmp_path / "speech.txt").write_text(speech, encoding="utf-8")
    cfg = compose_train(
        tmp_path, "data=text", f"data.path={tmp_path}/speech.txt", "data.tokenizer=char",
        f"data.cache_dir={tmp_path}/cache", "data.max_length=16", f"init_from={pretrained_run}",
    )
    datamodule, model, _ = data_and_start_model(cfg)
    trained = torch.load(pretrained_run / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert datamodule.tokenizer.spec() == trained["tokenizer"] and model.vocab_size == 65
    first = datamodule.token_streams("train")[0][:20].tolist()
    assert datamodule.tokenizer.decode(first) == speech[:20]


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["data=verdict"], "was trained on the 65 characters of its corpus, but data=verdict gives GPT-2 BPE ids"),
        (["data=verdict", "data.tokenizer=char"], r"""data=verdict holds characters '"\(\)_' that init_from=.* never saw \(its 65-character vocabulary\)"""),
        (["data=shakespeare_char", "data.max_length=128"], "data.max_length=128 is longer than the checkpoint's context_length=64"),
    ],
    ids=["other-tokenizer", "other-characters", "window-too-long"],
)
def test_data_the_checkpoints_model_cannot_read_is_refused_in_one_line(pretrained_run, tmp_path, overrides, words):
    cfg = compose_train(tmp_path, *overrides, f"init_from={pretrained_run}")
    with pytest.raises(ConfigError, match=words):
        data_and_start_model(cfg)


def test_generation_takes_a_runs_folder_as_init_from_too(pretrained_run):
    from gptlab.checkpoints.loading import load_for_generation

    by_init, by_ckpt = load_for_generation(init_from=str(pretrained_run)), load_for_generation(ckpt_path=str(pretrained_run))
    assert by_init.trained_window == by_ckpt.trained_window == 16
    idx = torch.tensor([[1, 2, 3]])
    assert torch.equal(by_init.model(idx), by_ckpt.model(idx))


@pytest.mark.e2e
def test_eval_scores_a_run_named_by_init_from_on_its_own_data(pretrained_run, tmp_path):
    result = run_script("eval.py", f"init_from={pretrained_run}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert_ok(result)
    assert f"data: the run's own ({pretrained_run / '.hydra' / 'config.yaml'})" in result.stdout
    assert "shakespeare_char, val split" in result.stdout


def test_a_lora_runs_weights_start_a_run_that_trains_every_weight(tmp_path):
    # Merged, a LoRA run's base weights were still frozen: finetune=full then had nothing to train, and the
    # first backward ended in a RuntimeError traceback.
    from tiny_models import TINY_GPT

    from gptlab.training.module import LanguageModelModule

    lora = {"name": "lora", "rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}
    module = LanguageModelModule(model=TINY_GPT, tokenizer={"kind": "gpt2"}, finetune=lora)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), "global_step": 3}
    torch.save(checkpoint, tmp_path / "run" / "checkpoints" / "last.ckpt")
    cfg = compose_train(tmp_path, "data=verdict", f"init_from={tmp_path / 'run'}")
    _, model, _ = data_and_start_model(cfg)
    assert not any("lora" in name for name, _ in model.named_parameters())  # the adapters are merged
    assert all(p.requires_grad for p in model.parameters())


def test_a_run_folder_without_last_ckpt_is_told_the_file_to_pass_as_init_from(tmp_path):
    # callbacks=none leaves Lightning's own file; the line suggested passing it as ckpt_path= (a resume).
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "csv" / "checkpoints").mkdir(parents=True)
    (run / "csv" / "checkpoints" / "epoch=0-step=3.ckpt").write_bytes(b"")
    cfg = compose_train(tmp_path, "data=verdict", f"init_from={run}")
    with pytest.raises(ConfigError, match=r"it holds csv/checkpoints/epoch=0-step=3.ckpt: pass it, 'init_from=\""):
        data_and_start_model(cfg)
