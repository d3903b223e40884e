"""What a real `make train` step costs beyond a bare PyTorch loop, measured inside the run itself.

A callback for train.py: from step ``start`` on, it alternates ``n`` steps of the real run (Trainer, data
loader, every callback) with ``n`` bare-loop steps (forward, backward, clipping, fused AdamW) on a copy of the
same model and the same batch, for ``rounds`` rounds, then prints both medians. One process and minutes
apart, so a noisy machine's slow spells land on both (between separate runs they did not: BENCHMARKS.md).

    PYTHONPATH=bench python train.py experiment=shakespeare_char trainer.max_steps=500 logger=csv \\
        +callbacks.step_overhead._target_=step_overhead.StepOverhead
"""

from __future__ import annotations

import copy
import statistics
import time

import lightning as L
import torch


class StepOverhead(L.Callback):
    def __init__(self, start: int = 300, n: int = 40, rounds: int = 4):
        self.start, self.n, self.rounds = start, n, rounds
        self.real: list[float] = []
        self.bare: list[float] = []
        self.last_start: float | None = None
        self.model = self.optimizer = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        now = time.perf_counter()
        since = trainer.global_step - self.start
        # A real step counts unless a bare stretch ran right before it (its time would be in it).
        if 0 < since <= self.n * self.rounds and self.last_start is not None and since % self.n != 1:
            self.real.append(now - self.last_start)
        if 0 < since <= self.n * self.rounds and since % self.n == 0:
            self.bare_steps(pl_module, batch, trainer.gradient_clip_val or 1.0)
            if since == self.n * self.rounds:
                print(
                    f"\n[step overhead] real run {1e3 * statistics.median(self.real):.1f} ms a step "
                    f"({len(self.real)} steps), bare loop {1e3 * statistics.median(self.bare):.1f} ms "
                    f"({len(self.bare)}): +{100 * (statistics.median(self.real) / statistics.median(self.bare) - 1):.1f}%",
                    flush=True,
                )
        self.last_start = time.perf_counter()

    def bare_steps(self, pl_module, batch, clip: float) -> None:
        if self.model is None:  # a copy: the run's own weights and optimizer state stay untouched
            self.model = copy.deepcopy(pl_module.model).train()
            self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=True)
        inputs, targets = batch
        for i in range(self.n):
            start = time.perf_counter()
            self.model.loss(inputs, targets).backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if i:  # the first warms up
                self.bare.append(time.perf_counter() - start)
