"""wandb's logging without its pandas import, written against wandb 0.31.0 (constraints.txt pins it).

Every value wandb logs that is not a plain number or string (our samples table, the loss-curve image) goes
through ``wandb.util.is_pandas_data_frame``, which imports pandas whenever it is installed only to ask
whether the value is a DataFrame: a third of a second at a run's first sample. No object can be a DataFrame
in a process that never imported pandas, so the question is asked only where pandas is loaded already: the
same answer for every value, a user's own DataFrames included. Where a later wandb renames the function,
nothing is patched and wandb imports pandas as before.
"""

from __future__ import annotations

import sys


def ask_about_data_frames_only_where_pandas_is_loaded() -> None:
    from wandb import util

    original = getattr(util, "is_pandas_data_frame", None)
    if original is None or getattr(original, "pandas_only_where_loaded", False):
        return

    def is_pandas_data_frame(obj) -> bool:
        return "pandas" in sys.modules and original(obj)

    is_pandas_data_frame.pandas_only_where_loaded = True
    util.is_pandas_data_frame = is_pandas_data_frame
