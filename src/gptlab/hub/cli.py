"""GPT-2 weights in and out: the command line, and one import point for hf_import and hf_export.

How the weights map between the two layouts: see gptlab.hub.gpt2_import.

Command line (export a checkpoint written by train.py to a folder that transformers loads)::

    python -m gptlab.hub.cli export ckpt_path=outputs/.../last.ckpt out_dir=exported/my-gpt \
        [dataset="Tiny Shakespeare"] [push_to_hub=user/my-gpt] [private=true]

Pushing reads the token from the HF_TOKEN environment variable and never writes it anywhere.
"""

from __future__ import annotations

import sys

from gptlab.core.errors import ConfigError, GptlabError
from gptlab.hub.export import (  # noqa: F401  (re-exported)
    checkpoint_card,
    export_checkpoint,
    export_to_hf,
    hf_config_from_gpt,
    hf_state_dict_from_gpt,
    hub_token,
    push_to_hub,
)
from gptlab.hub.gpt2_import import (  # noqa: F401  (re-exported)
    GPT2_NAMES,
    gpt_config_from_hf,
    gpt_from_hf_model,
    gpt_from_hf_state,
    load_pretrained_gpt,
    read_hf_folder,
    resolve_pretrained,
    state_dict_from_hf,
    tokenizer_for_pretrained,
)

_USAGE = """usage: python -m gptlab.hub.cli export ckpt_path=PATH out_dir=DIR [dataset=NAME] [push_to_hub=USER/REPO] [private=true]

Writes a gptlab GPT checkpoint as a Hugging Face GPT-2 folder (config.json, model.safetensors, tokenizer,
README.md model card). push_to_hub uploads it, reading the token from HF_TOKEN."""
_EXPORT_KEYS = ("ckpt_path", "out_dir", "dataset", "push_to_hub", "private")


def _parse_key_values(args: list[str]) -> dict[str, str]:
    options = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in _EXPORT_KEYS:
            raise ConfigError(
                f"unexpected argument {arg!r}; expected key=value with key in {', '.join(_EXPORT_KEYS)}"
            )
        options[key] = value
    return options


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_USAGE)
        return 0 if argv else 2
    try:
        if argv[0] != "export":
            raise ConfigError(f"unknown command {argv[0]!r}; the command is: export")
        options = _parse_key_values(argv[1:])
        for key in ("ckpt_path", "out_dir"):
            if not options.get(key):
                raise ConfigError(f"missing {key}=...; {_USAGE.splitlines()[0]}")
        repo_id = options.get("push_to_hub")
        if repo_id:
            hub_token()  # fail before the export, not after
        folder = export_checkpoint(options["ckpt_path"], options["out_dir"], options.get("dataset"), repo_id)
        print(f"exported to {folder}")
        if repo_id:
            private = options.get("private", "false").lower() in ("1", "true", "yes")
            print(f"pushed to {push_to_hub(folder, repo_id, private)}")
    except GptlabError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
