"""A line that every rank of a DDP launch would print, printed once.

Lightning starts a run's other ranks as processes of their own, and an error that all of them meet (a loss
that turns nan at the same step on every rank) was printed by each: the same line once per rank. The process
that launches the ranks names its launch (``GPTLAB_LAUNCH_ID``, which every rank copies); a rank about to
print a line first claims it, as a file named by the line's hash in a temporary folder of that launch. The
first rank to claim a line prints it, the others stay quiet (they exit all the same). Lines that differ are
all printed; ranks started by another launcher (torchrun, SLURM) print theirs as before.

The folder outlives the launch: a rank may claim a line after rank zero has gone (Lightning does not wait for
its ranks when rank zero fails), so no rank can know it is the last. Its name holds the launching process's
pid instead, and the next launch in that temporary folder removes the folders of launches whose launching
process has ended; a launch that failed left one behind before each, for ever.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from gptlab.core.files import process_running

LAUNCH_ID_ENV = "GPTLAB_LAUNCH_ID"
FOLDER_PREFIX = "gptlab-launch-"
_started_ranks = False  # whether this process started the ranks of its current launch


def name_this_launch() -> None:
    """Called before a run that may start ranks: a name no earlier launch had (a sweep's next job gets its
    own, or its first line would count as said). The ranks copy it from the environment."""
    global _started_ranks
    remove_ended_launches()
    os.environ[LAUNCH_ID_ENV] = f"{os.getpid()}-{uuid.uuid4().hex}"
    _started_ranks = False


def remove_ended_launches() -> None:
    """Remove the claim folders of launches whose launching process has ended, of this process's earlier
    launches (a sweep's earlier jobs), and those named before the name held a pid (none of them runs now)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*"):
        launcher, _, rest = folder.name.removeprefix(FOLDER_PREFIX).partition("-")
        if rest and launcher.isdigit() and int(launcher) != os.getpid() and process_running(int(launcher)):
            continue
        shutil.rmtree(folder, ignore_errors=True)  # another user's: theirs to remove


def ranks_started() -> None:
    """Called as this process starts a rank of the launch it named."""
    global _started_ranks
    _started_ranks = True


def first_to_say(line: str) -> bool:
    """Whether this process should print ``line``: False only where another rank of its launch has."""
    launch = os.environ.get(LAUNCH_ID_ENV)
    # The process that started ranks (its LOCAL_RANK is gone by the time an error reaches the top), or one
    # of the ranks it started; any other process has no one to share a line with.
    if not launch or not (_started_ranks or "LOCAL_RANK" in os.environ):
        return True
    folder = Path(tempfile.gettempdir()) / f"{FOLDER_PREFIX}{launch}"
    claim = folder / hashlib.sha256(line.encode()).hexdigest()[:32]
    try:
        folder.mkdir(exist_ok=True)
        os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    except OSError:
        return True  # no shared folder to claim it in: better twice than never
    return True
