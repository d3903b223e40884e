"""Typed configs (gptlab.config): every file of conf/ composes onto its schema, a value of the wrong type is
refused while Hydra composes, and a value out of range when the schemas are built, each with one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from compose import compose_train
from hydra.errors import InstantiationException
from omegaconf import OmegaConf
from repo import REPO_ROOT

from gptlab.compat.hydra import hydra_message
from gptlab.config.commands import TrainConfig
from gptlab.config.validate import validate_config
from gptlab.core.errors import ConfigError

CONF = REPO_ROOT / "conf"
TYPED_GROUPS = ("data", "model", "optim", "scheduler", "finetune", "trainer")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "override",
    [f"{group}={name}" for group in TYPED_GROUPS for name in options(group) if group != "trainer"]
    + [f"experiment={name}" for name in options("experiment")]
    + [f"debug={name}" for name in options("debug")]
    + ["trainer=cpu", "trainer=ddp"],
)
def test_every_config_file_composes_onto_its_schema_and_passes_it(tmp_path, override):
    cfg = compose_train(tmp_path, override)
    for group in TYPED_GROUPS:
        assert OmegaConf.get_type(cfg[group]).__module__.startswith("gptlab.config."), group
    built = validate_config(cfg)
    assert isinstance(built, TrainConfig)


WRONG_TYPES = {
    "trainer.max_steps=abc": "trainer.max_steps must be an integer, got 'abc'; e.g. trainer.max_steps=1",
    "optim.lr=fast": "optim.lr must be a number, got 'fast'; e.g. optim.lr=0.5",
    "model.tie_weights=maybe": "model.tie_weights must be true or false, got 'maybe'",
    "data.batch_size=2.5": "data.batch_size must be an integer, got 2.5",
    "seed=one": "seed must be an integer, got 'one'",
}


def refused_while_composing(tmp_path, override: str) -> str:
    """The one line train.py prints for an override Hydra refuses while composing the config."""
    with pytest.raises(Exception) as refused:
        compose_train(tmp_path, override)
    return hydra_message(refused.value)


@pytest.mark.parametrize("override", list(WRONG_TYPES))
def test_a_value_of_the_wrong_type_is_refused_while_composing(tmp_path, override):
    assert refused_while_composing(tmp_path, override).startswith(WRONG_TYPES[override])


def test_an_integer_interval_counts_batches_and_a_fraction_stays_a_fraction(tmp_path):
    cfg = compose_train(tmp_path, "trainer.val_check_interval=2", "trainer.limit_val_batches=0.5")
    assert type(cfg.trainer.val_check_interval) is int and type(cfg.trainer.limit_val_batches) is float


OUT_OF_RANGE = {
    "scheduler.name=linear": "scheduler.name must be one of ('cosine', 'constant'), got 'linear'",
    "finetune.name=qlora": "finetune.name must be one of ('full', 'lora'), got 'qlora'",
    "scheduler.warmup_ratio=1.5": "scheduler.warmup_ratio must be in [0, 1)",
    "optim.decay=some": "optim.decay must be one of ('matrices', 'all')",
    "optim.betas=[0.9,1.5]": "optim.betas must be two numbers in [0, 1)",
    "data.tokenizer=''": "data.tokenizer is empty",
    "data.num_workers=-1": "data.num_workers must be >= 0",
    "model.attn_impl=flash": "model.attn_impl must be one of ('sdpa', 'manual')",
    "model.gelu=relu": "model.gelu must be one of ('tanh', 'exact')",
    "model.drop_rate=1.0": "model.drop_rate must be in [0, 1)",
    "trainer.accumulate_grad_batches=0": "trainer.accumulate_grad_batches must be >= 1",
    "trainer.max_epochs=0": "trainer.max_epochs=0 trains nothing",
    # Lightning divided by these: a ZeroDivisionError traceback after the run had started.
    "trainer.val_check_interval=0": "trainer.val_check_interval must be >= 1, got 0",
    "trainer.val_check_interval=0.0": "trainer.val_check_interval=0.0 is a fraction of an epoch",
    "trainer.val_check_interval=1.5": "so it must be in (0, 1]",
    "trainer.check_val_every_n_epoch=0": "trainer.check_val_every_n_epoch must be >= 1",
    "trainer.devices=0": "trainer.devices must be a count of at least 1, -1 (every device), auto, or a list",
    "trainer.num_nodes=0": "trainer.num_nodes must be >= 1, got 0",
    # Lightning's Timer refused these after the slow imports.
    "trainer.max_time=4h": "trainer.max_time=4h is not a duration; e.g. trainer.max_time=00:04:00:00 (DD:HH:MM:SS)",
    "trainer.max_time={hourz: 4}": "trainer.max_time={'hourz': 4} is not a duration",
    # numpy's range (Lightning seeds it): a ValueError traceback from seed_everything.
    "seed=-5": "seed must be between 0 and 4294967295, got -5",
    "seed=4294967296": "seed must be between 0 and 4294967295",
}


def refused_by_the_schemas(tmp_path, override: str) -> str:
    """The one line of the ConfigError that a composed config's schemas raise for ``override``."""
    cfg = compose_train(tmp_path, override)
    with pytest.raises(ConfigError) as refused:
        validate_config(cfg)
    return str(refused.value)


@pytest.mark.parametrize("override", list(OUT_OF_RANGE))
def test_a_value_out_of_range_is_refused_with_the_rule_that_holds_it(tmp_path, override):
    assert OUT_OF_RANGE[override] in refused_by_the_schemas(tmp_path, override)


def test_rules_across_groups_live_in_the_train_schema(tmp_path):
    cfg = compose_train(tmp_path, "model=gpt_tiny", "data.max_length=128")
    with pytest.raises(ConfigError, match="data.max_length=128 is longer than model.context_length=64"):
        validate_config(cfg)
    # Pretrained weights bring their own context: the model group's is not the one that counts.
    validate_config(compose_train(tmp_path, "model=gpt_tiny", "data.max_length=128", "init_from=gpt2"))


def test_keys_nothing_read_are_gone(tmp_path):
    cfg = compose_train(tmp_path)
    assert "task_name" not in cfg and "name" not in cfg.optim and "vocab_size" not in cfg.data
    sweep = (CONF / "hparams_search" / "lr_warmup_wd.yaml").read_text()
    assert "optimized_metric" not in sweep


def test_each_schema_file_is_the_one_its_comments_name():
    for path in Path(CONF).rglob("*.yaml"):
        for line in path.read_text().splitlines():
            if "types and ranges: gptlab/config/" in line:
                module = line.split("gptlab/config/")[1].split()[0]
                assert (REPO_ROOT / "src" / "gptlab" / "config" / module).is_file(), (path, module)


def test_hydra_finds_the_schemas_without_being_told(tmp_path):
    """A fresh Python that composes conf/ through Hydra's compose API, importing nothing of gptlab."""
    code = (
        "from hydra import compose, initialize_config_dir\n"
        f"with initialize_config_dir(config_dir={str(CONF)!r}, version_base='1.3'):\n"
        "    cfg = compose('train', overrides=['model=decoder'])\n"
        "print(type(cfg.model._metadata.object_type).__name__, cfg.model._metadata.object_type.__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["type", "DecoderModelConfig"]


# A key added with + (Hydra's own advice for a key it does not know) where no code reads it: OmegaConf built it
# into an attribute nothing looked at, and the run went on without the setting the user meant.
READ_BY_NOTHING = {
    "+learning_rate=0.1": "learning_rate is not a setting of train.py; it takes: callbacks, ckpt_path",
    "+optim.lr_max=3": "optim.lr_max is not a setting of optim; it takes: betas, decay, eps, fused, lr",
    "+scheduler.warmup=10": "scheduler.warmup is not a setting of scheduler; did you mean scheduler.warmup_steps?",
    "+data.max_len=32": "data.max_len is not a setting of data; did you mean data.max_length?",
    "++model.emb_dims=32": "model.emb_dims is not a setting of model; did you mean model.emb_dim?",
}


@pytest.mark.parametrize("override", list(READ_BY_NOTHING))
def test_a_key_added_where_nothing_reads_it_is_refused(tmp_path, override):
    message = refused_by_the_schemas(tmp_path, override)
    assert message.startswith(READ_BY_NOTHING[override])
    assert message.endswith("(a key added with + is read by nothing here)")


@pytest.mark.parametrize("override", ["+trainer.profiler=simple", "+callbacks.text_sample.extra=1", "+paths.mine=/x"])
def test_a_key_added_where_it_is_passed_on_is_kept(tmp_path, override):
    # Lightning's Trainer and a callback get it as an argument (they refuse one they lack); paths are free.
    validate_config(compose_train(tmp_path, override))


UNKNOWN_KEYS = {
    "trainer.max_step=5": "trainer.max_step is not a setting of trainer; did you mean trainer.max_steps? (python ",
    "optim.lr_max=1": "optim.lr_max is not a setting of optim; it takes: betas, decay, eps, fused, lr, weight_decay (",
    # Lightning's Trainer takes arguments the schema does not list: then, and only then, Hydra's + is the way.
    "trainer.profilr=x": "to pass Lightning's Trainer one it does not list: +trainer.profilr=x (python ",
    "callbacks.text_sample.promt=x": "did you mean callbacks.text_sample.prompt?",
    # A real argument of Lightning's Trainer that conf/trainer lacks: was "did you mean trainer.max_steps?".
    "trainer.min_steps=10": (
        "trainer.min_steps is an argument of Lightning's Trainer that gptlab's config does not list: pass it with "
        "+trainer.min_steps=10 (python "
    ),
}


@pytest.mark.parametrize("override", list(UNKNOWN_KEYS))
def test_an_unknown_key_names_the_closest_one_and_says_plus_only_where_it_is_read(tmp_path, override):
    message = refused_while_composing(tmp_path, override)
    assert UNKNOWN_KEYS[override] in message
    assert ("+" in message) == override.startswith(("trainer.profilr", "trainer.min_steps")), message


def test_an_argument_its_class_does_not_take_is_one_line_naming_the_closest():
    from gptlab.compat.hydra import instantiate_config

    node = OmegaConf.create({"_target_": "lightning.pytorch.Trainer", "profilr": "simple"})
    with pytest.raises(ConfigError, match=r"^trainer.profilr is not a setting of Trainer; did you mean trainer.profiler\?$"):
        instantiate_config(node, "trainer")
    # A TypeError of the constructor's own, about no key of the config, is a bug to see whole: left as it is.
    node = OmegaConf.create({"_target_": f"{__name__}.builds_with_a_bug", "size": 2})
    with pytest.raises(InstantiationException, match="unexpected keyword argument 'colour'"):
        instantiate_config(node, "odd")


def paints(shade: str) -> str:
    return shade


def builds_with_a_bug(size: int) -> str:
    return paints(colour=size)


def test_wandb_settings_are_checked_against_wandb_init_before_the_run_starts():
    from gptlab.training.loggers import check_wandb_keys

    wandb = {"_target_": "lightning.pytorch.loggers.WandbLogger", "project": "gptlab", "log_model": False}
    check_wandb_keys(OmegaConf.create({**wandb, "entity": "my-team", "notes": "a run"}))  # wandb.init's own
    with pytest.raises(ConfigError, match=r"logger.wandb.entitiy is not a setting of .*did you mean logger.wandb.entity\?"):
        check_wandb_keys(OmegaConf.create({**wandb, "entitiy": "my-team"}))


def test_max_time_reaches_lightnings_timer_in_either_form(tmp_path):
    # {hours: 4} reached Lightning as an OmegaConf DictConfig: an AttributeError inside its Timer.
    from lightning.pytorch.callbacks import Timer

    from gptlab.compat.hydra import instantiate_config
    from gptlab.training.run import max_time_as_lightning_takes_it

    for override in ("trainer.max_time={minutes: 90}", "trainer.max_time=00:01:30:00"):
        cfg = compose_train(tmp_path, override, "trainer.accelerator=cpu")
        validate_config(cfg)
        trainer = instantiate_config(cfg.trainer, "trainer", logger=False, **max_time_as_lightning_takes_it(cfg.trainer))
        timers = [c for c in trainer.callbacks if isinstance(c, Timer)]
        assert len(timers) == 1 and timers[0].time_remaining() == 90 * 60
