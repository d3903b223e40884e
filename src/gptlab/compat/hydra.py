"""Hydra behaviour gptlab relies on, written for hydra-core 1.3.8 (pyproject pins ``>=1.3.2,<1.4``).

Hydra prints its composition errors over several lines, or as a traceback, and hands them to the caller
only when ``HYDRA_FULL_ERROR=1`` (``hydra._internal.utils.run_and_report``); their wording is the only
place that names the missing option and its alternatives. Both are undocumented.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra

from gptlab.compat import warn_if_untested

WRITTEN_FOR = "1.3.8"
warn_if_untested("hydra-core", hydra.__version__, WRITTEN_FOR, "the one-line configuration errors")


def raise_hydra_errors() -> bool:
    """Make Hydra raise its errors to the caller instead of printing them; True when the user had asked
    for Hydra's full tracebacks (HYDRA_FULL_ERROR=1), which they should then get."""
    wants_full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    return wants_full_error


def hydra_message(err: BaseException) -> str:
    """Hydra's multi-line composition errors as one line that says what to do."""
    text = str(err).strip()
    if "Could not find" in text and "Available options" in text:
        head, _, options = text.partition("Available options in")
        group, _, names = options.partition(":")
        group = group.strip().strip("'")
        choices = ", ".join(n.strip() for n in names.split() if n.strip())
        missing = head.split("Could not find", 1)[1].strip().split()[0]
        return (
            f"Could not find {missing}; available options in '{group}': {choices} "
            f"(pick one with {group.split('/')[-1]}=NAME)"
        )
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith(("full_key:", "object_type=", "reference_type="))
    ]
    message = "; ".join(lines)
    if "is not in struct" in message or "Could not override" in message:
        message += f" (python {Path(sys.argv[0]).name} --cfg job prints every key)"
    return message
