"""gptlab's Optuna sweeper: Hydra's, whose trials a stopped search leaves failed, not running for ever.

Hydra instantiates only sweepers defined under the ``hydra_plugins`` namespace; the change itself, and the
plugin internals it relies on, are in gptlab.compat.optuna_sweeper. conf/hparams_search/ names this class.
Optuna is imported when a search starts, not when Hydra scans its plugins (every command's start).
"""

from typing import Any

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper as HydraOptunaSweeper


class OptunaSweeper(HydraOptunaSweeper):
    """``hydra.sweeper._target_: hydra_plugins.gptlab_sweepers.OptunaSweeper``; the same settings as Hydra's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from gptlab.compat.optuna_sweeper import OptunaSweeperFailingStoppedTrials

        # Hydra's __init__ does only this, with its own class.
        self.sweeper = OptunaSweeperFailingStoppedTrials(*args, **kwargs)
