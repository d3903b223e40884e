"""Shared behaviour of the entry points: user mistakes become one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from lightning.fabric.utilities.exceptions import MisconfigurationException

from gptlab.errors import GptlabError

USER_ERRORS = (GptlabError, MisconfigurationException)
EXIT_USER_ERROR = 2


def find_user_error(err: BaseException) -> BaseException | None:
    """The user error behind ``err``: Hydra's instantiate wraps errors raised by constructors."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, USER_ERRORS):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


@contextmanager
def report_user_errors() -> Iterator[None]:
    try:
        yield
    except Exception as err:
        user_error = find_user_error(err)
        if user_error is None:
            raise
        message = " ".join(str(user_error).split())  # one line, whatever the library put in it
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
