"""One training run in a run folder at a time.

A resume started twice (a job requeued while the first is alive, a command typed again in another terminal)
trained two runs into the same folder: both wrote last.ckpt and best.ckpt in turn (each write whole, but of
either run) and metrics.csv; the folder held neither run. The first process of a run takes an exclusive lock
on ``<run folder>/.train.lock`` and holds it until training ends; another is refused in one line naming the
process that holds it. The lock is the kernel's (flock): it goes with its process, so one killed leaves none
behind. The other ranks of a DDP run share their first rank's folder and take none. Held, the folder's
unfinished checkpoint writes (a killed run's temporary files) can be removed safely.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import sys
from pathlib import Path

from gptlab.core.errors import ConfigError

LOCK_FILE = ".train.lock"
# Set by the launchers for a process that is not a run's first: Lightning's ranks (LOCAL_RANK), torchrun's
# (RANK, GROUP_RANK), SLURM's tasks (SLURM_PROCID), another node (NODE_RANK).
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "GROUP_RANK", "NODE_RANK", "SLURM_PROCID")

_held: dict[Path, int] = {}  # folder -> the open lock file of a run of this process


def is_first_rank() -> bool:
    return all(os.environ.get(name, "0") in ("", "0") for name in _RANK_VARIABLES)


def lock_run_folder(run_dir: str | Path) -> None:
    """Hold the run folder for this process's run (until :func:`release_run_folder`); refused in one line
    while another process holds it. Held, what a killed run left of a checkpoint it was writing is removed."""
    folder = Path(run_dir).resolve()
    if folder in _held or not is_first_rank():
        return
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return  # a folder it cannot write to is said by the next check, in its words
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise ConfigError(
            f"the run folder {folder} is in use by a train.py that is still running (pid {holder}); let it finish "
            "or stop it first (it saves last.ckpt on Ctrl-C or SIGTERM), then resume: two runs in one folder "
            "overwrite each other's checkpoints and metrics"
        ) from None
    except OSError:
        os.close(fd)
        return  # a file system without locks (some network ones): go on without
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _held[folder] = fd
    atexit.register(release_run_folder, folder)  # a command that stops before training releases it too
    remove_unfinished_checkpoints(folder)


def remove_unfinished_checkpoints(folder: Path) -> None:
    """The temporary files of checkpoint writes that a killed run (SIGKILL, the OOM killer, a lost node) left
    behind: each as large as a checkpoint, and never read. Only with the folder held: no other process can be
    writing one."""
    unfinished = list((folder / "checkpoints").glob(".*.ckpt.*.tmp"))  # gptlab.core.files.atomic_write's names
    freed = 0
    for path in unfinished:
        with contextlib.suppress(OSError):
            freed += path.stat().st_size
            path.unlink()
    if unfinished:
        print(f"note: removed {len(unfinished)} unfinished checkpoint file(s) ({freed / 2**20:,.1f} MB) that a killed run "
              f"left in {folder / 'checkpoints'}", file=sys.stderr, flush=True)


def release_run_folder(run_dir: str | Path) -> None:
    fd = _held.pop(Path(run_dir).resolve(), None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing drops the lock
