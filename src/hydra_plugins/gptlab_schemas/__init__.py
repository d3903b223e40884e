"""Registers gptlab's config schemas and resolvers wherever Hydra starts.

Hydra imports every module under the ``hydra_plugins`` namespace when it first looks for plugins, before it
composes a config: train.py and the other commands, Hydra's compose API in a test or a notebook, and the
jobs of a sweeper alike. Each file of conf/ names its schema (``/schema/...``) and paths.yaml uses our
resolvers (``${gptlab.repo_root:}``), so both must be registered by then, whoever composes.
"""

import gptlab.config.store  # noqa: F401  (registers the schemas)
import gptlab.core.resolvers  # noqa: F401  (registers the resolvers conf/ uses)
