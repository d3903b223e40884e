"""The garbage collector kept out of a command's imports and exit (gptlab.core.collector).

The collector is process-wide, so each check runs in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from cli_runner import TINY_GPT_RUN, clean_env
from repo import REPO_ROOT


def run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_imports_run_without_the_collector_and_what_they_made_is_frozen():
    out = run_python(
        """
        import gc
        from gptlab.core.collector import imports_without_collection
        with imports_without_collection():
            inside = gc.isenabled()
            import email.mime.text  # anything not yet imported
        print(inside, gc.isenabled(), gc.get_freeze_count() > 0)
        """
    )
    assert out == "False True True"


def test_a_later_use_freezes_nothing_so_a_sweeps_dropped_jobs_are_still_collected():
    """In a Hydra multirun the next job imports nothing new; freezing again would freeze the previous
    job's dropped objects, and a frozen cycle is never collected."""
    out = run_python(
        """
        import gc, weakref
        from gptlab.core.collector import imports_without_collection
        with imports_without_collection():
            pass
        frozen = gc.get_freeze_count()

        class Job:  # a finished job's objects: a reference cycle nobody holds any more
            pass
        job = Job(); job.me = job; alive = weakref.ref(job); del job
        with imports_without_collection():
            pass
        gc.collect()
        print(gc.get_freeze_count() == frozen, alive() is None)
        """
    )
    assert out == "True True"


def test_a_collector_the_user_turned_off_stays_off():
    out = run_python(
        """
        import gc
        from gptlab.core.collector import imports_without_collection
        gc.disable()
        with imports_without_collection():
            pass
        print(gc.isenabled())
        """
    )
    assert out == "False"


GC_WATCH = """
import atexit, gc, os, runpy, sys

def importing_lightning():
    run = sys.modules.get("gptlab.training.run")  # in sys.modules from the start of its import
    return run is not None and not hasattr(run, "train")

during_import = []
gc.callbacks.append(lambda phase, info: phase == "start" and info["generation"] == 2
                    and importing_lightning() and during_import.append(1))
# atexit runs after the command returned and before the interpreter's own clean-up
atexit.register(lambda: print(f"during import {len(during_import)} frozen at exit {gc.get_freeze_count()}"))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_train_imports_lightning_without_full_collections_and_exits_without_one(tmp_path):
    """Before: 8 full collections while importing Lightning (0.85 s on a 2-core EPYC), and one more over the
    same ~580,000 objects at exit (~0.8 s). Now the import makes none and the exit's finds them frozen."""
    result = subprocess.run(
        [sys.executable, "-c", GC_WATCH, "train.py", *TINY_GPT_RUN, "logger=csv", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, cwd=REPO_ROOT, env=clean_env(), timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = [x for x in result.stdout.splitlines() if x.startswith("during import")][-1]
    assert int(line.split()[2]) == 0, line
    assert int(line.split()[-1]) > 100_000, line


IMPORT_ORDER = """
import atexit, runpy, sys
first = []
sys.addaudithook(lambda event, args: event == "import" and args[0] in ("wandb", "lightning", "scipy", "transformers")
                 and args[0] not in first and first.append(args[0]))
atexit.register(lambda: print("imported first:", " ".join(first)))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("logger, order", [("wandb", "wandb lightning"), ("csv", "lightning")])
def test_wandb_is_imported_before_lightning_only_when_the_run_logs_to_it(tmp_path, logger, order):
    """wandb's start walks every loaded module for each of its pydantic models: after Lightning's ~6,000
    modules it took 0.3 s longer (gptlab.training.wandb_first). A CSV-only run never imports wandb. Neither
    imports scipy or transformers, which torchmetrics imported only because they are installed
    (gptlab.compat.torchmetrics: 2 s a run)."""
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_ORDER, "train.py", *TINY_GPT_RUN, f"logger={logger}", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, cwd=REPO_ROOT, env=clean_env(), timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"imported first: {order}" in result.stdout.splitlines()
