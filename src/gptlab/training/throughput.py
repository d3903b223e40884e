"""Training throughput and MFU, logged as the run goes: Lightning's ThroughputMonitor, set up for language models.

Logged every ``trainer.log_every_n_steps`` optimizer steps, as rolling averages over the last
``window_size`` batches (so nothing appears before that many batches), on rank zero only:

- ``throughput/tokens_per_sec``, ``throughput/samples_per_sec``: the whole job, all ranks together;
- ``throughput/tokens_per_sec_per_device``: one device (one rank);
- ``throughput/tflops_per_sec_per_device``: model FLOPs (gptlab.models.flops) one device does per second;
- ``throughput/mfu``: that over the device's peak FLOP/s (omitted when the peak is unknown).

Under DDP only rank zero times its steps, as ThroughputMonitor does (no collective per step): the
whole-job figures are its rate times the world size, and MFU is rank zero's, which is the job's when the
devices are alike. Validation time is left out of the training rates.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from gptlab.compat.lightning import TrainingThroughputMonitor
from gptlab.models.flops import FlopsShape, flops_shape, peak_flops

PREFIX = "throughput/"


def samples_in(batch: Any) -> int:
    return batch[0].size(0)  # (inputs, targets), each (B, T): the shape only, no device sync


def tokens_in(batch: Any) -> int:
    return batch[0].numel()


class ThroughputLogger(TrainingThroughputMonitor):
    """tokens/s, samples/s and MFU of training.

    Args:
        peak_tflops: peak TFLOP/s of one device for MFU; None takes Lightning's datasheet figure for known
            GPUs and measures the matmul peak on a CPU (0.2 s on two cores, once, at setup, on rank zero).
        mfu: False logs no MFU and never measures a peak.
        window_size: batches each rolling average spans.
    """

    def __init__(self, peak_tflops: float | None = None, mfu: bool = True, window_size: int = 20) -> None:
        super().__init__(batch_size_fn=samples_in, length_fn=tokens_in, window_size=window_size)
        self.window_size = window_size
        self.peak_tflops = peak_tflops
        self.mfu = mfu
        self.peak: float | None = None
        self._peak_known = False  # setup runs again for trainer.validate(): measure once per callback
        self._shape: FlopsShape | None = None
        self._flops_per_batch: dict[tuple[int, bool], float | None] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self._shape is None:
            # Here the model is whole: the strategy has not yet wrapped or sharded it (DDP, FSDP).
            self._shape = flops_shape(pl_module)
        if self.mfu and trainer.is_global_zero and not self._peak_known and self._fills_a_window(trainer):
            self.peak = peak_flops(trainer.strategy.root_device, trainer.precision, self.peak_tflops)
            self._peak_known = True
        self.set_peak_flops(self.peak if self.mfu else None)

    def _fills_a_window(self, trainer: L.Trainer) -> bool:
        """Whether the run is long enough to log any figure: else measuring a CPU peak is seconds for nothing
        (smoke runs such as debug=fast, and the test suite's tiny runs)."""
        return (
            trainer.max_steps < 0 or trainer.max_steps * trainer.accumulate_grad_batches >= self.window_size
        )

    # ThroughputMonitor reads the FLOPs of each batch from ``pl_module.flops_per_batch`` (its documented
    # contract); set it before each batch from the batch's own shape.
    @rank_zero_only
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, *_: Any
    ) -> None:
        pl_module.flops_per_batch = self._batch_flops(batch, training=True)

    @rank_zero_only
    def on_validation_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, *_: Any, **__: Any
    ) -> None:
        pl_module.flops_per_batch = self._batch_flops(batch, training=False)

    def _batch_flops(self, batch: Any, training: bool) -> float | None:
        key = (batch[0].size(-1), training)
        if key not in self._flops_per_batch:
            per_token = None if self._shape is None else self._shape.per_token(key[0])
            # Forward only is a third of forward + backward (2 of the 6 FLOPs per weight, 4 of the 12).
            self._flops_per_batch[key] = None if per_token is None else per_token * (1 if training else 1 / 3)
        per_token = self._flops_per_batch[key]
        return None if per_token is None else per_token * tokens_in(batch)

    def renamed(self, metrics: dict[str, float], world_size: int) -> dict[str, float]:
        return readable_metrics(metrics, world_size)


def readable_metrics(metrics: dict[str, float], world_size: int) -> dict[str, float]:
    """Lightning's Throughput keys (``device/items_per_sec``, ...) -> the names this callback logs."""
    out = {}
    if "device/items_per_sec" in metrics:
        out[PREFIX + "tokens_per_sec"] = metrics["device/items_per_sec"] * world_size
        out[PREFIX + "tokens_per_sec_per_device"] = metrics["device/items_per_sec"]
    if "device/samples_per_sec" in metrics:
        out[PREFIX + "samples_per_sec"] = metrics["device/samples_per_sec"] * world_size
    if "device/flops_per_sec" in metrics:
        out[PREFIX + "tflops_per_sec_per_device"] = metrics["device/flops_per_sec"] / 1e12
    if "device/mfu" in metrics:
        out[PREFIX + "mfu"] = metrics["device/mfu"]
    return out
