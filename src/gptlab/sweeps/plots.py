"""Loss and perplexity curves from a run's csv/metrics.csv, as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure  # the object API: no pyplot state, no GUI backend
from matplotlib.ticker import LogFormatter


@dataclass
class Curves:
    """One run's metrics against the number of training tokens seen when they were measured."""

    train: list[tuple[float, float]] = field(default_factory=list)  # (tokens seen, train/loss)
    val: list[tuple[float, float]] = field(default_factory=list)  # (tokens seen, val/loss)

    @property
    def best_val_loss(self) -> float | None:
        return min((loss for _, loss in self.val), default=None)


def read_rows(metrics_csv: str | Path) -> list[dict[str, str]]:
    with Path(metrics_csv).open(newline="") as f:
        return list(csv.DictReader(f))


def _number(row: dict[str, str], key: str) -> float | None:
    value = row.get(key)
    if value in (None, ""):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def curves_from_rows(rows: list[dict[str, str]]) -> Curves:
    """Train and validation loss against tokens seen.

    Validation rows carry no tokens_seen: they get the count of the last training step at or before
    their step. Rows after the last training step (in runs from before best/val_loss, train.py's
    re-validation of the best checkpoint was logged as val/loss) would repeat an earlier point at the wrong
    x, so they are left out.
    """
    tokens_at_step: dict[int, float] = {}
    curves = Curves()
    for row in rows:
        step, tokens, loss = _number(row, "step"), _number(row, "tokens_seen"), _number(row, "train/loss")
        if step is not None and tokens is not None:
            tokens_at_step[int(step)] = tokens
            if loss is not None:
                curves.train.append((tokens, loss))
    if not tokens_at_step:
        return curves
    last_train_step = max(tokens_at_step)
    seen_steps = set()
    for row in rows:
        step, loss = _number(row, "step"), _number(row, "val/loss")
        if step is None or loss is None or int(step) > last_train_step or int(step) in seen_steps:
            continue
        seen_steps.add(int(step))
        earlier = [s for s in tokens_at_step if s <= step]
        curves.val.append((tokens_at_step[max(earlier)] if earlier else 0.0, loss))
    return curves


def read_curves(metrics_csv: str | Path) -> Curves:
    return curves_from_rows(read_rows(metrics_csv))


def _plot(ax, points: list[tuple[float, float]], transform=lambda y: y, **style) -> None:
    if points:
        ax.plot([x for x, _ in points], [transform(y) for _, y in points], **style)


def plot_run(curves: Curves, output_file: str | Path, title: str = "") -> Path:
    """Loss and perplexity (train and validation) over tokens seen: one PNG with two panels."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    loss_ax, ppl_ax = fig.subplots(1, 2)
    for ax, transform, label in ((loss_ax, lambda y: y, "loss"), (ppl_ax, _safe_exp, "perplexity")):
        _plot(ax, curves.train, transform, label=f"train/{label}", alpha=0.6, linewidth=1)
        _plot(ax, curves.val, transform, label=f"val/{label}", marker="o", linewidth=2)
        ax.set_xlabel("tokens seen")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if curves.train or curves.val:
            ax.legend()
    ppl_ax.set_yscale("log")
    # Plain-text labels (100, 1e+04): the log scale's own are TeX ($10^{2}$), and parsing them was a third of
    # the time a run spends on its plot, a second that every run's end waited for.
    ppl_ax.yaxis.set_major_formatter(LogFormatter())
    ppl_ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
    if title:
        fig.suptitle(title)
    return _save(fig, output_file)


def plot_sweep(runs: dict[str, Curves], output_file: str | Path, title: str = "") -> Path:
    """Validation loss over tokens seen, one line per job of a sweep."""
    fig = Figure(figsize=(9, 5), layout="constrained")
    ax = fig.subplots()
    for label, curves in runs.items():
        _plot(ax, curves.val, label=label, marker="o", markersize=3)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("val/loss")
    ax.grid(alpha=0.3)
    if runs:
        ax.legend(fontsize="small", loc="upper right")
    if title:
        ax.set_title(title)
    return _save(fig, output_file)


def _safe_exp(value: float) -> float:
    return math.exp(min(value, 700.0))


def _save(fig: Figure, output_file: str | Path) -> Path:
    path = Path(output_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=100)
    tmp.replace(path)  # a reader never sees half a PNG
    return path
