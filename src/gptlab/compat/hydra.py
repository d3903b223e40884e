"""Hydra behaviour gptlab relies on, written for hydra-core 1.3.8 (pyproject pins ``>=1.3.2,<1.4``).

Hydra prints its composition errors over several lines, or as a traceback, and hands them to the caller
only when ``HYDRA_FULL_ERROR=1`` (``hydra._internal.utils.run_and_report``); their wording is the only
place that names the missing option and its alternatives, and OmegaConf's (2.3) the only place that says
which type a schema wanted. All of it is undocumented.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from gptlab.compat import warn_if_untested
from gptlab.config.help import command_groups
from gptlab.config.unknown_keys import open_to, unknown_key_message
from gptlab.core.errors import ConfigError, error_chain

WRITTEN_FOR = "1.3.8"
warn_if_untested("hydra-core", hydra.__version__, WRITTEN_FOR, "the one-line configuration errors")


def raise_hydra_errors() -> bool:
    """Make Hydra raise its errors to the caller instead of printing them; True when the user had asked
    for Hydra's full tracebacks (HYDRA_FULL_ERROR=1), which they should then get."""
    wants_full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    return wants_full_error


# OmegaConf's wording of a value that does not fit a schema's type (omegaconf 2.3), and ours.
_TYPE_WORDS = {
    "converted to Integer": ("an integer", "1"),
    "converted to Float": ("a number", "0.5"),
    "not a valid bool": ("true or false", "true"),
    "Union[int, float]": ("a number (an integer counts batches, a fraction of an epoch otherwise)", "1.0"),
}


def _wrong_type(err: BaseException) -> str | None:
    """'trainer.max_steps must be an integer, got 'abc'; e.g. trainer.max_steps=1' from OmegaConf's
    ValidationError (the cause of Hydra's "Error merging override")."""
    for cause in error_chain(err):
        key = getattr(cause, "full_key", None)
        if key and type(cause).__name__ == "ValidationError":
            for words, (kind, example) in _TYPE_WORDS.items():
                if words in str(cause):
                    return f"{key} must be {kind}, got {getattr(cause, 'value', None)!r}; e.g. {key}={example}"
    return None


def _unknown_key(err: BaseException) -> str | None:
    """'trainer.max_step is not a setting of trainer; did you mean trainer.max_steps?' from Hydra's "Could
    not override" (whose advice, to add the key with +, is right only where something reads such a key)."""
    override = re.search(r"To append to your config use (\+\S+)", str(err))
    for cause in error_chain(err):
        parent, path = getattr(cause, "parent_node", None), getattr(cause, "full_key", None)
        if override and path and isinstance(parent, DictConfig) and "not in" in str(cause):
            schema = OmegaConf.get_type(parent)
            receiver = open_to(schema) if dataclasses.is_dataclass(schema) else parent.get("_target_")
            pass_on = f"; to pass {receiver} one it does not list: {override[1]}" if receiver else ""
            command = Path(sys.argv[0]).name
            key = path.rpartition(".")[2]
            if receiver and takes_argument(parent.get("_target_"), key):
                # trainer.max_time: "did you mean trainer.max_steps?" would have sent a user away from a real
                # argument of Lightning's Trainer that conf/trainer happens not to list.
                message = f"{path} is an argument of {receiver} that gptlab's config does not list: pass it with {override[1]}"
            else:
                message = unknown_key_message(path, parent.keys(), path.rpartition(".")[0] or command, if_none_close=pass_on)
            return f"{message} (python {command} --cfg job prints every key)"
    return None


def takes_argument(target: Any, key: str) -> bool:
    """Whether the class a config node builds (its ``_target_``) takes ``key`` by name."""
    if not isinstance(target, str):
        return False
    try:
        parameters = inspect.signature(hydra.utils.get_class(target)).parameters
    except Exception:  # noqa: BLE001 - no class to ask (a function, a target that does not import): no claim
        return False
    return key in parameters and parameters[key].kind in (parameters[key].KEYWORD_ONLY, parameters[key].POSITIONAL_OR_KEYWORD)


def command_line_overrides() -> list[str]:
    """The overrides of this command line, without Hydra's flags and their values (``-m``, ``--cfg job``,
    ``-cn NAME``), read by Hydra's own argument parser (the only one that knows them all)."""
    from hydra._internal.utils import get_args_parser

    known, _ = get_args_parser().parse_known_args(sys.argv[1:])
    return list(known.overrides)


def _unreadable_override(err: BaseException) -> str | None:
    """An override Hydra's grammar cannot read (``prompt=€``, ``prompt=a(b``): which one, and the same value
    quoted, which the grammar reads whatever its characters."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    if not any(isinstance(cause, OverrideParseException) for cause in error_chain(err)):
        return None
    parser = OverridesParser.create()
    for override in command_line_overrides():
        if _readable(parser, override):
            continue
        key, _, value = override.partition("=")
        quoted = f"{key}='{value}'" if '"' in value else f'{key}="{value}"'
        quote_it = f"{shlex.quote(quoted)} (https://hydra.cc/docs/1.3/advanced/override_grammar/basic)"
        words = override.split()
        if len(words) > 1 and all("=" in word and _readable(parser, word) for word in words):
            # "data=mixture optim.lr=1e-3" quoted as one argument (a Makefile's ARGS, a script's variable):
            # quoting it further would make "mixture optim.lr=1e-3" the data option.
            return (
                f"Hydra cannot read the override {override!r}: if it is {len(words)} overrides, pass each as an "
                f"argument of its own: {' '.join(map(shlex.quote, words))}; if it is one value, quote it: {quote_it}"
            )
        return f"Hydra cannot read the override {override}: put its value in quotes, inside the shell's: {quote_it}"
    return None


def _readable(parser, override: str) -> bool:
    """Whether Hydra's grammar reads ``override`` (parse_overrides re-raises its error as OverrideParseException)."""
    from hydra.errors import HydraException

    try:
        parser.parse_override(override)
    except HydraException:
        return False
    return True


def null_group_override(err: BaseException, conf_dir: Path | None) -> str | None:
    """``callbacks=null``: Hydra refuses a config group set to null with a ValueError traceback, naming
    neither the override nor what the group takes. The one line for it; None for any other error."""
    if not isinstance(err, ValueError) or "Config group override must be a string or a list" not in str(err):
        return None
    for override in command_line_overrides():
        key, _, value = override.partition("=")
        group = key.lstrip("+")
        if value.lower() == "null" and conf_dir is not None and (conf_dir / group).is_dir():
            return (
                f"{override}: {group} is a config group, set to one of its options ({_options(conf_dir, group)}), "
                f"or left out with ~{group}"
            )
    return f"a config group was set to null ({err}); set it to one of its options, or leave it out with ~GROUP"


def _missing_from_a_list(text: str, conf_dir: Path | None) -> str | None:
    """'tasks=[nope]': Hydra says it "Could not load 'tasks/nope'" and, unlike for tasks=nope, lists no
    options but its search path; the options are the group's files in conf/."""
    missing = re.search(r"Could not load '([\w/.-]+)/([\w.-]+)'", text)
    if not missing or conf_dir is None or not (conf_dir / missing[1]).is_dir():
        return None
    group = missing[1]
    name = group.split("/")[-1]
    return (
        f"Could not find '{group}/{missing[2]}'; available options in '{group}': {_options(conf_dir, group)} "
        f"(pick with {name}=[NAME,...])"
    )


def _group_it_does_not_have(text: str, conf_dir: Path | None) -> str | None:
    """``generate.py data=verdict``: Hydra says "Could not override 'data'. No match in the defaults list"
    and advises ``+data=verdict``, which fails again in the command's schema ("Key 'data' not in
    'GenerateConfig'"). Which groups the command has instead."""
    found = re.search(r"Could not override '([\w/]+)'\. No match in the defaults list", text) or re.search(
        r"ConfigKeyError raised while composing config:\s*Key '(\w+)' not in '\w+'", text
    )
    if not found or conf_dir is None or not (conf_dir / found[1]).is_dir():
        return None
    command = Path(sys.argv[0]).name
    groups = [group for group, _ in command_groups(conf_dir, Path(command).stem)]
    if not groups:
        return f"{found[1]} is not a config group of {command}, which has none: its settings are keys (python {command} --help lists them)"
    return f"{found[1]} is not a config group of {command}; its groups: {', '.join(groups)} (python {command} --help lists their options)"


def _options(conf_dir: Path, group: str) -> str:
    """A config group's options: the names of its files in the command's config folder."""
    return ", ".join(sorted(p.stem for p in (conf_dir / group).glob("*.yaml")))


def hydra_message(err: BaseException, conf_dir: Path | None = None) -> str:
    """Hydra's multi-line composition errors as one line that says what to do; ``conf_dir``, the command's
    config folder, lets it list a group's options where Hydra does not."""
    wrong_type = _wrong_type(err)
    if wrong_type:
        return wrong_type
    specific = _unknown_key(err) or _unreadable_override(err)
    if specific:
        return specific
    text = str(err).strip()
    from_a_list = _missing_from_a_list(text, conf_dir) or _group_it_does_not_have(text, conf_dir)
    if from_a_list:
        return from_a_list
    if "Could not find" in text and "Available options" in text:
        head, _, options = text.partition("Available options in")
        group, _, names = options.partition(":")
        names = names.split("Config search path")[0]  # Hydra lists its search path after the options
        group = group.strip().strip("'")
        choices = ", ".join(n.strip() for n in names.split() if n.strip())
        missing = head.split("Could not find", 1)[1].strip().split()[0]
        return (
            f"Could not find {missing}; available options in '{group}': {choices} "
            f"(pick one with {group.split('/')[-1]}=NAME)"
        )
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith(("full_key:", "object_type=", "reference_type="))
    ]
    message = "; ".join(lines)
    if "is not in struct" in message or "Could not override" in message:
        message += f" (python {Path(sys.argv[0]).name} --cfg job prints every key)"
    return message


_failed_jobs_quiet = False


def quiet_failed_job_returns() -> None:
    """Hydra's ``JobReturn.return_value`` writes "Error executing job with overrides: [...]" to stderr before
    it re-raises a failed job's exception (hydra/core/utils.py; the basic and Optuna sweepers ask for every
    job's after the sweep or trial). A job failed by a user error already printed its own line, with its
    number and overrides (:class:`SweepJobFailed`): the second line, saying less, is skipped for it only.
    Idempotent."""
    global _failed_jobs_quiet
    from hydra.core.utils import JobReturn, JobStatus

    from gptlab.core.sweep_jobs import SweepJobFailed

    if _failed_jobs_quiet:
        return
    hydras = JobReturn.return_value

    def return_value(job: JobReturn):
        if job.status == JobStatus.FAILED and isinstance(job._return_value, SweepJobFailed):
            raise job._return_value
        return hydras.fget(job)

    JobReturn.return_value = property(return_value, hydras.fset)  # run_job sets it
    _failed_jobs_quiet = True


def instantiate_config(node: Any, where: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node, **kwargs)``; a key of ``node`` that its target does not take (a key
    added with +, e.g. ``+trainer.profilr=simple``) becomes one line naming it and the closest argument
    instead of Hydra's InstantiationException around the target's TypeError (Hydra 1.3 wraps it)."""
    from hydra.errors import InstantiationException
    from hydra.utils import get_object, instantiate

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        for cause in error_chain(err):
            unexpected = re.search(r"unexpected keyword argument '(\w+)'", str(cause))
            if isinstance(cause, TypeError) and unexpected and unexpected[1] in node:
                target = str(node["_target_"])
                known = inspect.signature(get_object(target)).parameters
                message = unknown_key_message(f"{where}.{unexpected[1]}", known, target.rpartition(".")[2])
                raise ConfigError(message) from err
        raise
