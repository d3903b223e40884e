"""torchmetrics, which Lightning imports on its first import, without the scipy.signal and transformers
imports it makes only because they are installed: 2 s of every command's start, 30% of a tiny run.

torchmetrics' ``__init__`` imports scipy.signal whenever ``package_available("scipy")`` (a back-compat alias
for SRMRpy), and ``functional/text/bert.py`` imports transformers' auto classes whenever
``RequirementCache("transformers>=4.4.0")`` holds (BERTScore), both through lightning_utilities
(Lightning-AI/torchmetrics#3457). scipy comes with optuna and lm-eval, transformers is a dependency of ours,
and gptlab uses no metric that needs either (``MeanMetric`` alone). While torchmetrics' own package imports,
those two checks say the packages are absent; nothing else sees a difference, and gptlab's imports of
transformers are unchanged. The cost: torchmetrics' audio metrics and BERTScore, InfoLM, CLIPScore and CLIP-IQA
believe their package missing. A callback of yours that needs them: set ``GPTLAB_TORCHMETRICS_EXTRAS=1``.

Written against torchmetrics 1.9.0 and lightning-utilities 0.15.3; with another torchmetrics it imports
as it always does.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

WRITTEN_FOR = "1.9.0"
HIDDEN = frozenset({"scipy", "transformers"})
OPT_OUT = "GPTLAB_TORCHMETRICS_EXTRAS"


def import_torchmetrics_lean() -> None:
    """From now on, torchmetrics' first import skips scipy.signal and transformers (this process only)."""
    if "torchmetrics" in sys.modules or os.environ.get(OPT_OUT) == "1":
        return
    if not any(isinstance(finder, _LeanTorchmetrics) for finder in sys.meta_path):
        sys.meta_path.insert(0, _LeanTorchmetrics())


class _LeanTorchmetrics(importlib.abc.MetaPathFinder):
    """Finds torchmetrics as Python would, once, and runs its package's code with the two checks hidden."""

    def find_spec(self, fullname: str, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "torchmetrics":
            return None
        sys.meta_path.remove(self)  # one import; its submodules are found as ever
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or _installed("torchmetrics") != WRITTEN_FOR:
            return spec
        spec.loader = _HidingLoader(spec.loader)
        return spec


class _HidingLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__spec__.loader = module.__loader__ = self.loader  # what introspection finds afterwards
        with packages_hidden(HIDDEN):
            self.loader.exec_module(module)


@contextmanager
def packages_hidden(hidden: frozenset[str]) -> Iterator[None]:
    """lightning_utilities' availability checks, as the modules imported meanwhile bind them, answer False for
    ``hidden``; the module's own functions are restored afterwards."""
    from lightning_utilities.core import imports
    from packaging.requirements import Requirement

    real_package_available, real_requirement_cache = imports.package_available, imports.RequirementCache

    def package_available(name: str) -> bool:
        return name.split(".")[0] not in hidden and real_package_available(name)

    class RequirementCache(real_requirement_cache):
        def __bool__(self) -> bool:
            if self.requirement and Requirement(self.requirement).name in hidden:
                return False
            return super().__bool__()

    imports.package_available, imports.RequirementCache = package_available, RequirementCache
    try:
        yield
    finally:
        imports.package_available, imports.RequirementCache = real_package_available, real_requirement_cache


def _installed(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
