"""Hydra behaviour gptlab relies on, written for hydra-core 1.3.8 (pyproject pins ``>=1.3.2,<1.4``).

Hydra prints its composition errors over several lines, or as a traceback, and hands them to the caller
only when ``HYDRA_FULL_ERROR=1`` (``hydra._internal.utils.run_and_report``); their wording is the only
place that names the missing option and its alternatives, and OmegaConf's (2.3) the only place that says
which type a schema wanted. All of it is undocumented.
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


# OmegaConf's wording of a value that does not fit a schema's type (omegaconf 2.3), and ours.
_TYPE_WORDS = {
    "converted to Integer": ("an integer", "1"),
    "converted to Float": ("a number", "0.5"),
    "not a valid bool": ("true or false", "true"),
    "Union[int, float]": ("a number (an integer counts batches, a fraction of an epoch otherwise)", "1.0"),
}


def _wrong_type(err: BaseException) -> str | None:
    """'trainer.max_steps must be an integer, got 'abc'; e.g. trainer.max_steps=1' from OmegaConf's
    ValidationError (the cause of Hydra's "Error merging override")."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        key = getattr(err, "full_key", None)
        if key and type(err).__name__ == "ValidationError":
            for words, (kind, example) in _TYPE_WORDS.items():
                if words in str(err):
                    return f"{key} must be {kind}, got {getattr(err, 'value', None)!r}; e.g. {key}={example}"
        err = err.__cause__ or err.__context__
    return None


def hydra_message(err: BaseException) -> str:
    """Hydra's multi-line composition errors as one line that says what to do."""
    wrong_type = _wrong_type(err)
    if wrong_type:
        return wrong_type
    text = str(err).strip()
    if "Could not find" in text and "Available options" in text:
        head, _, options = text.partition("Available options in")
        group, _, names = options.partition(":")
        names = names.split("Config search path")[0]  # Hydra lists its search path after the options
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
