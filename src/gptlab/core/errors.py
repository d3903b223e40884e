"""Errors that are the user's to fix: the entry points print them as one line and exit non-zero."""


class GptlabError(Exception):
    """A mistake in input or setup that a user can fix; its message says what is wrong and how to fix it."""

    label = "error"  # the word the one-line message starts with
    exit_code = 2


class ConfigError(GptlabError, ValueError):
    """A configuration value that cannot work (bad shape, out-of-range number, ...)."""


class DataError(GptlabError):
    """A corpus that is missing, corrupted or too small for the requested windows."""


class NoSpaceLeft(GptlabError, OSError):
    """A file could not be written for want of space (or quota): the earlier file is intact. An OSError too,
    so what writes a file it can do without (the token cache) still goes on without it. ``what``: the
    sentence that says so, to which a command adds its own way on (train.py: the resume command)."""

    def __init__(self, what: str, way_on: str = "free some space (or write elsewhere) and run again"):
        super().__init__(f"{what}; {way_on}")
        self.what = what


class TrainingDiverged(GptlabError):
    """The loss or the gradients stopped being finite numbers: training cannot go on from here."""


class TrainingInterrupted(GptlabError):
    """Stopped by SIGTERM or SIGINT after saving a checkpoint; the message says how to resume."""

    label = "interrupted"

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def first_line(err: BaseException, limit: int = 200) -> str:
    """An exception in a few words for a one-line message: its first line, or its type when it has none."""
    lines = str(err).strip().splitlines()
    return lines[0][:limit] if lines else type(err).__name__


def error_chain(err: BaseException | None):
    """The error, then those it was raised from or while handling (each once): where a library's wrapper
    hides the error that says what happened."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__
