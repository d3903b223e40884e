"""Shared behaviour of the entry points: user mistakes become one line on stderr and exit code 2."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from gptlab.core.errors import GptlabError

EXIT_USER_ERROR = 2


def user_error_types() -> tuple[type[BaseException], ...]:
    """GptlabError, and Lightning's MisconfigurationException once Lightning is loaded.

    Importing Lightning costs seconds; an entry point that fails before it needs Lightning need not pay them.
    """
    lightning_errors = sys.modules.get("lightning.fabric.utilities.exceptions")
    return (GptlabError, lightning_errors.MisconfigurationException) if lightning_errors else (GptlabError,)


def find_user_error(err: BaseException) -> BaseException | None:
    """The user error behind ``err``: Hydra's instantiate wraps errors raised by constructors."""
    seen = set()
    user_errors = user_error_types()
    while err is not None and id(err) not in seen:
        if isinstance(err, user_errors):
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
        print(f"{getattr(user_error, 'label', 'error')}: {message}", file=sys.stderr, flush=True)
        sys.exit(getattr(user_error, "exit_code", EXIT_USER_ERROR))


@contextmanager
def quiet_when_the_reader_leaves() -> Iterator[None]:
    """`python generate.py ... | head`: when the reader closes the pipe, stop without a traceback, with
    the status of a Unix tool stopped by SIGPIPE (128 + 13)."""
    try:
        yield
    except BrokenPipeError:
        # Python would flush stdout again at exit and complain a second time: point it at /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(141)


_task_started = False


def mark_task_started() -> None:
    """Called first thing in the Hydra task: OSErrors after this are the job's, not the run folder's."""
    global _task_started
    _task_started = True


@contextmanager
def one_line_hydra_errors() -> Iterator[None]:
    """Hydra's own errors (unknown option or key, bad override, run folder not writable) as one line.

    Hydra prints them over several lines, or as a traceback; it re-raises them when HYDRA_FULL_ERROR=1,
    which this sets unless the user already asked for full tracebacks.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from gptlab.compat.hydra import hydra_message, raise_hydra_errors

    wants_full_error = raise_hydra_errors()
    try:
        yield
    except (HydraException, OmegaConfBaseException) as err:
        if wants_full_error:
            raise
        print(f"error: {hydra_message(err)}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
    except OSError as err:
        if wants_full_error or _task_started:
            raise
        where = f" {err.filename}" if err.filename else ""
        print(
            f"error: cannot create the run folder{where} ({err.strerror or err}); fix its permissions or "
            "choose another with hydra.run.dir=PATH",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(EXIT_USER_ERROR)
