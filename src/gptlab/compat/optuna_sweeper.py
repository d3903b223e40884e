"""Hydra's Optuna sweeper, written for hydra-optuna-sweeper 1.3.0 (pyproject pins ``>=1.2,<1.4``) and
optuna 2.10, with two changes for a saved study (``hydra.sweeper.storage=sqlite:///...``) that a search stops
and a later one continues.

The plugin asks Optuna for a batch of trials, runs them, then tells Optuna each result. A sweep stopped in
between (Ctrl-C or SIGTERM: the job saves its checkpoint and exits 130 or 143) told nothing, so a saved study
(``hydra.sweeper.storage=sqlite:///...``) kept those trials RUNNING for ever: listed as running by every
tool that reads the study, never finished, never counted. Optuna's own ``study.optimize`` marks a trial it
was running when stopped as FAIL; this does the same. The plugin's private ``_configure_trials`` is the one
place that is handed the trials it asked for.

A continued study started its seeded sampler (``seed: ${seed}``) afresh: its random start-up trials were the
first search's again, trial for trial, so a search stopped early and continued re-ran what it had tried.
Optuna keeps no sampler state in the storage; a continued study's sampler is seeded ``seed + the number of
trials so far`` instead (the same continuation proposes the same trials), and its job folders are numbered on
from those trials: one sweep folder can hold the whole study (job N is trial N), where the second search's
job 0 found the first one's checkpoints and failed.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import optuna
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper import __version__ as plugin_version
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
from optuna.trial import TrialState

from gptlab.compat import warn_if_untested
from gptlab.core.errors import ConfigError, first_line

WRITTEN_FOR = "1.3.0"
warn_if_untested("hydra-optuna-sweeper", plugin_version, WRITTEN_FOR, "a stopped search's trials")


class OptunaSweeperFailingStoppedTrials(OptunaSweeperImpl):
    """The plugin's sweeper; a trial asked for and not yet told is told FAIL when the sweep stops."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_flight: list[optuna.trial.Trial] = []

    def _configure_trials(self, trials: list[optuna.trial.Trial], *args: Any, **kwargs: Any) -> Any:
        # Called with each batch of trials just before the launcher runs them.
        self.in_flight = list(trials)
        return super()._configure_trials(trials, *args, **kwargs)

    def sweep(self, arguments: list[str]) -> None:
        self.continue_saved_study()
        try:
            super().sweep(arguments)
        except BaseException as err:  # the stop itself (SystemExit, KeyboardInterrupt) above all
            self.fail_unfinished_trials()
            if isinstance(err, ValueError) and self.in_flight and not completed_trials(self.in_flight[0].study):
                # Optuna's words for it, as the plugin asks for the best trial at the end: "Record does not exist."
                name = self.in_flight[0].study.study_name
                raise ValueError(f"no trial of study {name} completed, so it has no best parameters") from None
            raise

    def continue_saved_study(self) -> None:
        earlier = trials_so_far(self.study_name, self.storage)
        if not earlier:
            return
        self.job_idx = earlier
        sampler_config = self.config.hydra.sweeper.get("sampler") or {}
        reseeded = ""
        if not isinstance(self.sampler, functools.partial) and sampler_config.get("seed") is not None:
            seed = int(sampler_config.seed) + earlier
            self.sampler = instantiate(sampler_config, seed=seed)
            reseeded = f", its sampler seeded {seed} (seed + {earlier})"
        print(
            f"note: study {self.study_name} in {self.storage} has {earlier} trial{'s' if earlier > 1 else ''}: "
            f"continuing it from trial {earlier} (job folder {earlier}){reseeded}",
            file=sys.stderr,
            flush=True,
        )

    def fail_unfinished_trials(self) -> None:
        if not self.in_flight or self.storage is None:
            return  # an in-memory study ends with the process: nothing outlives it to correct
        study = self.in_flight[0].study
        try:
            running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
            stopped = [trial for trial in self.in_flight if trial.number in running]
            for trial in stopped:
                study.tell(trial, state=TrialState.FAIL)
        except Exception as err:  # the stop's own message matters more than this one
            print(f"note: could not mark the unfinished Optuna trials failed: {err}", file=sys.stderr, flush=True)
            return
        if stopped:
            numbers = ", ".join(str(trial.number) for trial in stopped)
            print(
                f"note: Optuna trial{'s' if len(stopped) > 1 else ''} {numbers} of study {study.study_name} marked failed (stopped before "
                f"{'they' if len(stopped) > 1 else 'it'} finished); running the same search again continues the study in {self.storage}",
                file=sys.stderr,
                flush=True,
            )


def completed_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def trials_so_far(study_name: str | None, storage: Any) -> int:
    """How many trials a saved study already has; 0 for a new study, or one kept in memory."""
    if storage is None or study_name is None:
        return 0  # an unnamed study gets a new name each time: never continued
    try:
        return len(optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False))
    except KeyError:  # no such study yet
        return 0
    except Exception as err:  # SQLAlchemy's URL, driver or file errors: a traceback before any trial ran
        raise ConfigError(
            f"hydra.sweeper.storage={storage} cannot be opened ({first_line(err)}); give a database Optuna can "
            "open, e.g. sqlite:///optuna.db (a file in a folder that exists), or hydra.sweeper.storage=null for a study in memory"
        ) from err
