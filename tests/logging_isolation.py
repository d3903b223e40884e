"""A pytest plugin (tests/conftest.py loads it): each test ends with the root and lightning loggers' handlers
and levels as it found them.

A command run in this process (Hydra's job logging, gptlab's one console for Lightning) leaves its handlers on
those loggers, the console one writing to that test's capsys stream, closed once the test ends: a later test of
the same worker that logged got "--- Logging error ---" on its stderr (CI at stop 36, in the order xdist
happened to deal the tests)."""

from __future__ import annotations

import logging

import pytest


def _ours(logger: logging.Logger) -> list[logging.Handler]:
    # pytest adds and removes its capture handlers around each phase (setup, call, teardown): not ours.
    return [handler for handler in logger.handlers if not type(handler).__module__.startswith("_pytest")]


@pytest.fixture(autouse=True)
def _logging_as_before_the_test():
    loggers = [logging.getLogger(), logging.getLogger("lightning")]
    saved = [(logger, _ours(logger), logger.level) for logger in loggers]
    yield
    for logger, handlers, level in saved:
        for handler in _ours(logger):
            if handler not in handlers:
                logger.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in logger.handlers:
                logger.addHandler(handler)
        logger.setLevel(level)
