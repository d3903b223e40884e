"""Loss and perplexity curves: from metrics.csv rows, and the PNG a train.py run leaves in its folder."""

from __future__ import annotations

import pytest
from cli_runner import IMPORT_TIMES, TINY_RUN, assert_ok, imported_modules, run_train

from gptlab.sweeps.plots import Curves, curves_from_rows, plot_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path) -> None:
    from PIL import Image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG" and image.size[0] > 100


def test_validation_points_get_the_tokens_of_their_step_and_the_final_revalidation_is_left_out():
    rows = [
        {"step": "0", "tokens_seen": "128", "train/loss": "10.9", "val/loss": ""},
        {"step": "1", "tokens_seen": "256", "train/loss": "10.5", "val/loss": ""},
        {"step": "1", "tokens_seen": "", "train/loss": "", "val/loss": "10.4"},
        {"step": "2", "tokens_seen": "384", "train/loss": "10.1", "val/loss": ""},
        {"step": "3", "tokens_seen": "", "train/loss": "", "val/loss": "10.0"},  # validate-after-fit row
    ]
    curves = curves_from_rows(rows)
    assert curves.train == [(128.0, 10.9), (256.0, 10.5), (384.0, 10.1)]
    assert curves.val == [(256.0, 10.4)]
    assert curves.best_val_loss == 10.4


def test_plot_run_writes_a_png_even_without_validation(tmp_path):
    path = plot_run(
        curves_from_rows([{"step": "0", "tokens_seen": "8", "train/loss": "3.0"}]), tmp_path / "p.png"
    )
    assert_png(path)


@pytest.mark.parametrize("decades", [0.1, 4], ids=["within-a-decade", "four-decades"])
def test_the_perplexity_axis_labels_its_ticks_in_plain_text(tmp_path, monkeypatch, decades):
    # The log scale's TeX labels ($10^{2}$) were a third of a run's plot time, which every run's end waited for.
    from matplotlib.mathtext import MathTextParser

    def refuse(self, text, *args, **kwargs):
        raise AssertionError(f"a label was parsed as TeX: {text}")

    monkeypatch.setattr(MathTextParser, "parse", refuse)
    losses = [1.5 + decades * 2.3 * i / 9 for i in range(10)]
    path = plot_run(Curves(train=[(1e6 * i, loss) for i, loss in enumerate(losses)]), tmp_path / "p.png")
    assert_png(path)


@pytest.mark.e2e
def test_a_training_run_saves_its_loss_curves_and_logs_them_to_wandb(tmp_path):
    run_dir = tmp_path / "run"
    # The default logger: wandb + csv.
    result = run_train(run_dir, "model=gpt_tiny", "data=verdict", *TINY_RUN, python_args=IMPORT_TIMES)
    assert_ok(result)
    assert_png(run_dir / "loss_curves.png")
    assert f"loss curves: {run_dir / 'loss_curves.png'}" in result.stdout
    [logged] = (run_dir / "wandb").glob("offline-run-*/files/media/images/loss_curves_*.png")
    assert_png(logged)
    assert list((run_dir / "wandb").glob("offline-run-*/files/media/table/samples_*.table.json"))
    # wandb imported pandas at the first table or image it logged, only to ask whether it was a DataFrame.
    imported = imported_modules(result)
    assert "wandb" in imported and "pandas" not in imported
