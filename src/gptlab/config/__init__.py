"""Typed configs: one dataclass per config group, with the group's ranges checked where it is declared.

Hydra composes conf/ onto these schemas (registered by gptlab.config.store), so a value of the wrong type
is refused while the config is composed; :func:`gptlab.config.validate.validate_config` then builds the
dataclasses, whose ``__post_init__`` checks ranges and the keys that depend on each other. Only checks
that need the file system, the machine or the data are left to the run's preflight.
"""
