import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from tiny_models import TINY_GPT
from trainers import quiet_trainer

from gptlab.compat.lightning import optimizer_step_pending
from gptlab.data.datamodule import TextDataModule
from gptlab.training.callbacks import ValidateAtMaxSteps
from gptlab.training.module import LanguageModelModule, decay_groups


@pytest.fixture
def datamodule(data_dir) -> TextDataModule:
    # 534 validation tokens in windows of 32: 16 windows, batches of 3 -> the last batch holds 1.
    dm = TextDataModule(corpus="the-verdict", data_dir=str(data_dir), batch_size=3, max_length=32)
    dm.setup("fit")
    return dm


def make_module() -> LanguageModelModule:
    torch.manual_seed(0)
    return LanguageModelModule(model=TINY_GPT, tokenizer={"kind": "gpt2"}, optim={"lr": 1e-3})


def trainer_in(tmp_path, **kwargs) -> L.Trainer:
    """A quiet Trainer that writes its checkpoints in ``tmp_path`` (some tests read them)."""
    return quiet_trainer(default_root_dir=tmp_path, enable_checkpointing=True, **kwargs)


def test_val_ppl_is_exp_of_the_mean_loss_over_every_validation_token(tmp_path, datamodule):
    module = make_module()
    [metrics] = trainer_in(tmp_path).validate(module, datamodule=datamodule, verbose=False)

    # The reference, from the raw validation tokens: each target p (1 .. N-1) is predicted from the
    # 32-token window holding it, [32k, 32k + 32) - or, past the last whole window, the last 32 tokens.
    tokens, width = datamodule.val_tokens, 32
    total = 0.0
    with torch.no_grad():
        for p in range(1, len(tokens)):
            start = min((p - 1) // width * width, len(tokens) - 1 - width)
            logits = module.model(tokens[start : start + width].unsqueeze(0))[0, p - 1 - start]
            total += F.cross_entropy(logits, tokens[p]).item()
    count = len(tokens) - 1  # every target once: 533 for The Verdict's 534 validation tokens
    assert metrics["val/loss"] == pytest.approx(total / count, rel=1e-5)
    assert metrics["val/ppl"] == pytest.approx(math.exp(total / count), rel=1e-5)


def test_training_logs_and_checkpoint_loads_with_weights_only(tmp_path, datamodule):
    module = make_module()
    trainer = trainer_in(
        tmp_path, max_steps=3, limit_val_batches=1, num_sanity_val_steps=0, callbacks=[ValidateAtMaxSteps()]
    )
    trainer.fit(module, datamodule=datamodule)
    assert module.tokens_seen == 3 * 3 * 32
    # max_steps stops mid-epoch: ValidateAtMaxSteps still validates the final weights.
    for key in ("train/loss", "train/ppl", "lr", "tokens_seen", "val/loss", "val/ppl"):
        assert key in trainer.logged_metrics, key

    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["hyper_parameters"]["model"] == TINY_GPT
    assert checkpoint["tokens_seen"] == 3 * 3 * 32
    restored = LanguageModelModule.load_from_checkpoint(path, weights_only=True)
    x = torch.randint(0, 50257, (1, 8))
    assert torch.equal(restored.model(x), module.model.eval()(x))


def test_weight_decay_applies_to_matrices_only():
    decayed, plain = decay_groups(make_module().model, weight_decay=0.1)
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decayed["params"]) and all(p.dim() == 1 for p in plain["params"])


def test_weight_decay_on_every_parameter_as_the_book():
    model = make_module().model
    [group] = decay_groups(model, weight_decay=0.1, decay="all")
    assert group["weight_decay"] == 0.1 and len(group["params"]) == len(list(model.parameters()))


def test_the_gradient_norm_and_clipping_list_the_parameters_once_a_fit(tmp_path, datamodule):
    """Walking the module tree for them at every step, for the norm and again for clipping, cost 0.17 ms
    of make train's 38 ms step."""
    module = make_module()
    walks, walk = [], module.parameters
    module.parameters = lambda *args, **kwargs: walks.append(1) or walk(*args, **kwargs)
    after_each_step = []

    class CountWalks(L.Callback):
        def on_train_batch_end(self, *_):
            after_each_step.append(len(walks))

    trainer_in(tmp_path, max_steps=4, limit_val_batches=0, gradient_clip_val=1.0, callbacks=[CountWalks()]).fit(
        module, datamodule=datamodule
    )
    assert len(after_each_step) == 4 and after_each_step[0] == after_each_step[-1]


def test_clipping_covers_a_layer_put_in_between_fits(tmp_path, datamodule):
    module = make_module()
    trainer_in(tmp_path, max_steps=1, limit_val_batches=0).fit(module, datamodule=datamodule)
    old = module.model.out_head
    module.model.out_head = torch.nn.Linear(old.in_features, old.out_features, bias=False)
    trainer_in(tmp_path / "second", max_steps=1, limit_val_batches=0, gradient_clip_val=1e-3).fit(
        module, datamodule=datamodule
    )
    # The step's gradients stay after it: clipped as one, the new layer's with the rest.
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    assert module.model.out_head.weight.grad is not None
    assert torch.nn.utils.get_total_norm(grads).item() == pytest.approx(1e-3, rel=1e-3)


def test_grad_norm_is_the_unscaled_norm_under_float16_loss_scaling(tmp_path, datamodule):
    """16-mixed scales the loss by 65536; fused AdamW unscales inside step(), after the norm is logged."""
    from lightning.pytorch.plugins import MixedPrecision

    def first_grad_norm(**precision) -> float:
        module = make_module()
        trainer = trainer_in(tmp_path, max_steps=1, limit_val_batches=0, **precision)
        trainer.fit(module, datamodule=datamodule)
        assert trainer.optimizers[0].defaults["fused"]  # the optimizer unscales: Lightning does not
        return trainer.logged_metrics["grad_norm"].item()

    true_norm = first_grad_norm(precision="32-true")
    scaled_run = first_grad_norm(plugins=[MixedPrecision("16-mixed", "cpu")])
    assert scaled_run == pytest.approx(true_norm, rel=0.05)  # float16 rounding, not a factor of 65536


class RecordStepLosses(L.Callback):
    """The reference: each micro-batch's loss (the weights do not change inside an accumulated step) and
    token count, against the train/loss logged when the optimizer steps."""

    def __init__(self):
        self.micro: list[tuple[float, int]] = []
        self.pairs: list[tuple[float, float]] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        with torch.no_grad():
            self.micro.append((module.loss(batch).item(), batch[1].numel()))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if optimizer_step_pending(trainer):
            return
        expected = sum(loss * n for loss, n in self.micro) / sum(n for _, n in self.micro)
        self.pairs.append((trainer.callback_metrics["train/loss"].item(), expected))
        self.micro.clear()


def test_train_loss_is_the_token_weighted_mean_of_the_accumulated_micro_batches(tmp_path, datamodule):
    recorder = RecordStepLosses()
    # 3 micro-batches per step; the epoch's last step has fewer, and its last batch fewer windows.
    trainer = trainer_in(
        tmp_path, max_epochs=1, accumulate_grad_batches=3, limit_val_batches=0, callbacks=[recorder],
        log_every_n_steps=1,
    )
    trainer.fit(make_module(), datamodule=datamodule)
    assert len(recorder.pairs) == trainer.global_step > 1
    for logged, expected in recorder.pairs:
        assert logged == pytest.approx(expected, rel=1e-5)


class RecordLoggedLosses(L.Callback):
    """train/loss as the callbacks see it after each optimizer step."""

    def __init__(self):
        self.seen: list[float | None] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        value = trainer.callback_metrics.get("train/loss")
        self.seen.append(None if value is None else value.item())


def test_training_logs_only_the_steps_the_loggers_keep_and_the_last(tmp_path, datamodule):
    """self.log on every step cost a tenth of a small model's step, for values Lightning then dropped:
    only every log_every_n_steps-th step is logged, and the last step of a run cut by max_steps."""
    recorder = RecordLoggedLosses()
    trainer = trainer_in(tmp_path, max_steps=7, log_every_n_steps=3, limit_val_batches=0, callbacks=[recorder])
    trainer.fit(make_module(), datamodule=datamodule)
    seen = recorder.seen
    assert seen[0] is None and seen[1] is None  # steps 1 and 2: nothing logged yet
    assert seen[2] is not None and seen[3] == seen[2] and seen[4] == seen[2]  # step 3, kept through 4 and 5
    assert seen[5] is not None and seen[5] != seen[2]  # step 6
    assert seen[6] is not None and seen[6] != seen[5]  # step 7, the last
