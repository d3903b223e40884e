"""Errors that are the user's to fix: the entry points print them as one line and exit non-zero."""


class GptlabError(Exception):
    """A mistake in input or setup that a user can fix; its message says what is wrong and how to fix it."""


class ConfigError(GptlabError, ValueError):
    """A configuration value that cannot work (bad shape, out-of-range number, ...)."""


class DataError(GptlabError):
    """A corpus that is missing, corrupted or too small for the requested windows."""
