"""Python's cyclic garbage collector at a command's start and end, where it costs seconds and finds nothing.

Importing Lightning and what it pulls in (torch, torchmetrics, transformers, scipy) creates ~580,000 objects
that live as long as the process. The collector scans every tracked object in each full collection: eight
of them during those imports, 0.85 s in all, and one more at exit, when the interpreter's own clean-up of
the same objects took another ~0.8 s (2-core AMD EPYC, BENCHMARKS.md). None of those objects is garbage.
``gc.freeze()`` moves them out of the collector's sight (they are still freed by reference counting as
ever); the collector itself stays on for everything the command creates afterwards.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_frozen_imports = False


@contextmanager
def imports_without_collection() -> Iterator[None]:
    """Import a command's libraries with the collector paused, then freeze what they created.

    Only the process's first use freezes: a later one (the next job of a Hydra multirun, whose imports are
    already done) would freeze the previous job's dropped objects too, and a frozen cycle is never
    collected: its memory would stay taken for the rest of the sweep.
    """
    global _frozen_imports
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if not _frozen_imports:
            gc.freeze()
            _frozen_imports = True
        if was_enabled:
            gc.enable()


def exit_without_collection() -> None:
    """At the end of a command: freeze what is left, so the interpreter's final collection skips it.

    Everything still alive at exit is about to go anyway; the collection would only delay the exit.
    """
    gc.freeze()
