"""torchmetrics imported without scipy.signal and transformers (gptlab.compat.torchmetrics): each check in a
fresh interpreter, since an import happens once a process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from repo import REPO_ROOT

LOADED = "print(*(name in sys.modules for name in ('scipy.signal', 'transformers', 'lightning')))"


def run_python(code: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300, env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip()


def test_lightning_imported_after_gptlab_loads_neither_scipy_nor_transformers_and_its_metrics_work():
    out = run_python(
        f"""
        import sys
        import gptlab, lightning, torch
        from torchmetrics import MeanMetric
        {LOADED}
        mean = MeanMetric()
        mean.update(torch.tensor(1.0), weight=3)
        mean.update(torch.tensor(5.0), weight=1)
        print(float(mean.compute()))
        """
    )
    assert out.splitlines() == ["False False True", "2.0"]


def test_the_packages_are_hidden_from_torchmetrics_alone_and_only_while_it_imports():
    out = run_python(
        """
        import gptlab, lightning
        from lightning_utilities.core.imports import RequirementCache, package_available
        from torchmetrics.utilities.imports import _SCIPY_AVAILABLE, _TRANSFORMERS_GREATER_EQUAL_4_4
        print(bool(_SCIPY_AVAILABLE), bool(_TRANSFORMERS_GREATER_EQUAL_4_4))
        print(package_available("scipy"), bool(RequirementCache("transformers>=4.4.0")))
        from transformers import AutoConfig  # gptlab's own uses of transformers are untouched
        import scipy.signal
        print(AutoConfig.__name__, hasattr(scipy.signal, "windows"))
        """
    )
    assert out.splitlines() == ["False False", "True True", "AutoConfig True"]


def test_a_user_who_needs_torchmetrics_extras_gets_them_by_setting_the_variable():
    out = run_python(f"import sys, gptlab, lightning; {LOADED}", GPTLAB_TORCHMETRICS_EXTRAS="1")
    assert out == "True True True"


def test_another_torchmetrics_version_is_imported_as_it_always_is():
    out = run_python(
        f"""
        import sys
        import gptlab.compat.torchmetrics as lean
        lean.WRITTEN_FOR = "0.0.0"  # as if another torchmetrics were installed
        import lightning
        {LOADED}
        """
    )
    assert out == "True True True"
