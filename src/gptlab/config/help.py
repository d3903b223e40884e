"""The config groups that `python <command>.py --help` lists: the command's own, from its defaults list.

Hydra's help listed every folder of conf/ for every command: the internal schema/* groups, eval.py's tasks
in train.py's help, and train.py's eleven groups in the help of generate.py, which reads none of them.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

# Groups a command composes that hold no choice for its user (Hydra's own; the schemas of the values).
_NOT_CHOICES = ("hydra", "/")


def command_groups(conf_dir: Path, command: str) -> list[tuple[str, object]]:
    """(group, default option) for each group in conf/<command>.yaml's defaults list, in its order."""
    path = conf_dir / f"{command}.yaml"
    if not path.is_file():  # --config-dir/--config-name elsewhere: the user's own config, not one of ours
        return []
    defaults = OmegaConf.to_container(OmegaConf.load(path)).get("defaults", [])
    return [
        (group, option)
        for entry in defaults
        if isinstance(entry, dict)
        for group, option in entry.items()
        if not group.startswith(_NOT_CHOICES)
    ]


def config_groups_help(conf_dir: Path, command: str) -> str:
    """The help's section on config groups: each group's options, its default marked with a *."""
    groups = command_groups(conf_dir, command)
    if not groups:
        return f"{command}.py has no config groups: every setting is a key below (key=value)\n"
    lines = ["== Configuration groups ==", "Compose your configuration from those groups (group=option; * the default)", ""]
    for group, default in groups:
        chosen = set(default) if isinstance(default, list) else {default}
        options = ", ".join(
            f"{name}*" if name in chosen else name for name in sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))
        )
        how = " (optional)" if default is None else f" (a list: {group}=[a,b])" if isinstance(default, list) else ""
        lines.append(f"{group}{how}: {options}")
    return "\n".join(lines) + "\n"
