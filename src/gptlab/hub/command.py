"""What export.py does with conf/export.yaml: a checkpoint out as a Hugging Face folder, then to the Hub.

How the weights map between the two layouts: gptlab.hub.gpt2_import; the folder and its model card:
gptlab.hub.export.
"""

from __future__ import annotations

from typing import Any

from gptlab.core.errors import ConfigError
from gptlab.hub.export import export_checkpoint, hub_token, push_to_hub

USAGE = "python export.py ckpt_path=PATH out_dir=DIR [push_to_hub=USER/REPO]"


def export_from_config(cfg: dict[str, Any]) -> None:
    for key, what in (("ckpt_path", "the checkpoint to export"), ("out_dir", "the folder to write")):
        if not cfg.get(key):
            raise ConfigError(f"missing {key}=..., {what}: {USAGE}")
    repo_id = cfg.get("push_to_hub")
    if repo_id:
        hub_token()  # fail before the export, not after
    folder = export_checkpoint(str(cfg["ckpt_path"]), str(cfg["out_dir"]), cfg.get("dataset"), repo_id)
    print(f"exported to {folder}")
    if repo_id:
        print(f"pushed to {push_to_hub(folder, repo_id, cfg['private'])}")
