"""Files written atomically: checkpoints, token caches, metrics, corpora.

A file is written to a temporary file in the same folder, flushed and fsynced, then renamed over the old
one: a crash or a kill at any moment leaves either the previous file or the new one, never half a file.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

# Test hook: seconds to pause half-way through writing a checkpoint (to kill a run mid-save in tests).
SLOW_SAVE_ENV = "GPTLAB_TEST_SLOW_SAVE"


def atomic_write_bytes(data: bytes, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it the usual permissions
        with os.fdopen(fd, "wb") as f:
            pause = float(os.environ.get(SLOW_SAVE_ENV) or 0)
            if pause:
                half = len(data) // 2
                f.write(data[:half])
                f.flush()
                time.sleep(pause)
                f.write(data[half:])
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)  # make the rename itself durable


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(buffer.getvalue(), path)
