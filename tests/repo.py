"""Where the tests find the repository and the corpora."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# CI and the README point GPTLAB_DATA_DIR at ../shared/data; fall back to that folder beside the repo.
DATA_DIR = Path(os.environ.get("GPTLAB_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
