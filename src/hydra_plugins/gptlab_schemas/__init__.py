"""Registers gptlab's config schemas wherever Hydra starts.

Hydra imports every module under the ``hydra_plugins`` namespace when it first looks for plugins, before it
composes a config: train.py and the other commands, Hydra's compose API in a test or a notebook, and the
jobs of a sweeper alike. Each file of conf/ names its schema (``/schema/...``), so the schemas must be in
the ConfigStore by then, whoever composes.
"""

import gptlab.config.store  # noqa: F401  (registers the schemas)
