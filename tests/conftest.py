"""Shared fixtures: the corpora and their texts, and token caches kept out of the user's home.

Helpers that tests import live in modules of their own (repo.py, tiny_models.py, compose.py, cli_runner.py,
slow_runs.py, logging_isolation.py): conftest is pytest's, not a module to import."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from repo import DATA_DIR, REPO_ROOT

pytest_plugins = ["logging_isolation", "pytester"]  # each test ends with the loggers it found; a pytest in a test

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest worker per core (pytest-xdist): each then computes on one thread, and so do
    # the train.py subprocesses it starts (they copy os.environ), instead of two workers' four threads
    # taking turns on two cores. Tiny models gain nothing from a second thread.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session", autouse=True)
def _token_cache_in_tmp(tmp_path_factory):
    """Token caches of test runs (in-process and subprocesses, which copy os.environ) go to a session
    folder, never the user's ~/.cache."""
    os.environ["GPTLAB_CACHE_DIR"] = str(tmp_path_factory.mktemp("token-cache"))


@pytest.fixture(scope="session", autouse=True)
def _no_run_folder_left_in_the_repo():
    """An entry point run without hydra.run.dir writes its run folder among the user's own runs, in the repo's
    outputs/ or multirun/ (eval.py's bad-input case did, unseen for weeks): fail the session on any such
    folder that names a pytest temporary path (a user's own run started meanwhile names none; a test's run
    that names none is not caught either)."""

    def run_folders() -> set[Path]:
        patterns = ("outputs/*/*/.hydra", "outputs/eval/*/*/.hydra", "multirun/*/*/*/.hydra")
        return {hydra.parent for pattern in patterns for hydra in REPO_ROOT.glob(pattern)}

    before = run_folders()
    yield
    left = [
        folder
        for folder in run_folders() - before
        if any("/pytest-of-" in saved.read_text(errors="replace") for saved in (folder / ".hydra").glob("*.yaml"))
    ]
    assert not left, f"tests left run folders in the repo (give each command hydra.run.dir=tmp_path/...): {left}"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "the-verdict.txt").exists():
        pytest.fail(f"corpora not found in {DATA_DIR}: set GPTLAB_DATA_DIR to the folder holding them")
    return DATA_DIR


@pytest.fixture(scope="session")
def verdict_text(data_dir: Path) -> str:
    return (data_dir / "the-verdict.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def shakespeare_text(data_dir: Path) -> str:
    return (data_dir / "tinyshakespeare.txt").read_text(encoding="utf-8")
