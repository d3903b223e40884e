"""Files written atomically: checkpoints, token caches, metrics, corpora; and the folders users name.

A file is written to a temporary file in the same folder, flushed and fsynced, then renamed over the old
one: a crash or a kill at any moment leaves either the previous file or the new one, never half a file.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from gptlab.core.errors import ConfigError, GptlabError, NoSpaceLeft, error_chain, first_line


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write`` on a temporary file beside ``path``, make it durable, then rename it to ``path``. A file
    system that is full (or a quota reached) is NoSpaceLeft, one line naming the folder; the earlier file stays."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    target: _WriteErrors | None = None
    try:
        give_usual_permissions(Path(tmp))  # mkstemp makes it private
        with os.fdopen(fd, "wb") as f:
            target = _WriteErrors(f)
            write(target)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if out_of_space(err, target):
            raise _no_space_for(path, "what was written before is intact") from None
        raise
    _fsync_dir(path.parent)  # make the rename itself durable


class _WriteErrors:
    """A file whose write errors are remembered: torch.save turns a full disk into a RuntimeError of its own
    ("unexpected pos 704 vs 598", torch 2.13), and the OSError behind it would be lost."""

    def __init__(self, file: BinaryIO):
        self._file = file
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self._file.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name: str):
        return getattr(self._file, name)


_OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)


def out_of_space(err: BaseException, target: _WriteErrors | None = None) -> bool:
    """Whether ``err`` (or an error behind it, or one ``target`` met writing) says the disk or quota is full."""
    for seen in error_chain(err):  # also one raised while handling it (closing the file)
        if isinstance(seen, NoSpaceLeft) or (isinstance(seen, OSError) and seen.errno in _OUT_OF_SPACE):
            return True
        if "No space left on device" in str(seen):  # a library's own error: safetensors' (Rust) says only this
            return True
    return target is not None and target.error is not None and target.error.errno in _OUT_OF_SPACE


def as_no_space_left(err: BaseException) -> NoSpaceLeft | None:
    """The NoSpaceLeft behind ``err`` (one of our writes, naming its file), or one in general words where
    another write met a full disk (a library's, a plain one); None where the disk is not the cause."""
    ours = next((seen for seen in error_chain(err) if isinstance(seen, NoSpaceLeft)), None)
    if ours is None and out_of_space(err):
        ours = NoSpaceLeft(f"no space left on the disk ({first_line(err)})")
    return ours


def _no_space_for(path: Path, kept: str) -> NoSpaceLeft:
    from tqdm import tqdm  # only when a write failed

    try:
        free = tqdm.format_sizeof(shutil.disk_usage(path.parent).free, "B", 1024)  # 572kB, 25.6MB
    except OSError:
        free = "unknown space"
    return NoSpaceLeft(f"no space left on the file system of {path.parent} to write {path.name} ({free} free); {kept}")


def give_usual_permissions(path: Path) -> None:
    """The mode a new file gets from open() (0o666 less the umask), for a file a library wrote private."""
    os.chmod(path, 0o666 & ~_umask())


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


def atomic_write_bytes(data: bytes, path: str | Path) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(text: str, path: str | Path) -> None:
    """A results or report file (UTF-8): never half written, and a full disk named with the file."""
    atomic_write_bytes(text.encode("utf-8"), path)


def append_text(text: str, path: str | Path) -> None:
    """Add ``text`` (UTF-8) at the end of a file that grows as a run goes (samples.txt). A full disk is
    NoSpaceLeft naming the file, as for the atomic writes: a plain write's error names none."""
    path = Path(path)
    try:
        with path.open("a", encoding="utf-8") as f:
            f.write(text)
    except OSError as err:
        if out_of_space(err):
            raise _no_space_for(path, "what it held before is kept") from None
        raise


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    import torch  # here: the corpus and config writers need no torch

    # Streamed into the file: no second copy of the checkpoint in memory.
    atomic_write(path, lambda f: torch.save(obj, f))


def csv_text(fieldnames: list[str], rows: list[dict]) -> str:
    """A CSV file's text: the header, then one line per row."""
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=fieldnames)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def markdown_table_text(columns: list[str], rows: list[dict[str, str]]) -> str:
    """A Markdown table: the header, then one line per row (a "|" in a cell escaped)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(row[c].replace("|", "\\|") for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def read_user_text(
    path: str | Path, key: str, error: type[GptlabError] = ConfigError, standard_input: bool = False
) -> str:
    """The text of a file the user named with ``key=`` (a prompt, a task's items): UTF-8, without the byte
    order mark Windows editors begin such files with, Windows line ends as newlines; one line (``error``)
    when it is missing, a folder or not UTF-8. ``standard_input``: ``key=-`` reads what is piped in."""
    if standard_input and str(path) == "-":
        data, named = _standard_input_bytes(key, error), f"{key}=- (standard input)"
    else:
        file = Path(path).expanduser()
        if file.is_dir():
            raise error(f"{key}={path} is a folder; name a text file")
        if not file.is_file():
            raise error(f"{key}={path} does not exist")
        data, named = file.read_bytes(), f"{key}={path}"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise error(f"{named} is not UTF-8 text (byte offset {err.start}: {err.reason}); convert it to UTF-8") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")  # as open()'s universal newlines read them


def _standard_input_bytes(key: str, error: type[GptlabError]) -> bytes:
    if sys.stdin is None:
        raise error(f"{key}=- reads standard input, which this process does not have")
    if sys.stdin.isatty():
        print("reading standard input (end it with Ctrl-D)", file=sys.stderr, flush=True)
    return sys.stdin.buffer.read()


def output_folder(path: str | Path, key: str) -> Path:
    """The folder the user named with ``key=`` (out_dir, ...), created if need be; one clear line when it
    cannot be (a file in the way, no permission)."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create {key}={folder} ({err.strerror or err}); choose a folder you can write to") from None
    return folder


@contextlib.contextmanager
def folder_written_whole(path: Path) -> Iterator[Path]:
    """Yield a new folder beside ``path`` to write into; when the block ends without an error it takes
    ``path``'s place (an earlier folder there is removed), else it is removed. A crash or an error while
    writing leaves ``path`` as it was: an earlier export stays whole, never half old and half new. What a
    write killed on the way left beside ``path`` is cleared first (_clear_killed_writes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _clear_killed_writes(path)
    # The writer's pid in the name: a later write tells a killed one's folder from one being written now.
    fresh = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp"))
    try:
        os.chmod(fresh, 0o777 & ~_umask())  # mkdtemp makes it private; give it the usual permissions
        yield fresh
        old = fresh.with_suffix(".old")
        if path.exists():
            path.rename(old)
        fresh.rename(path)
        shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(path.parent)
    except Exception as err:
        shutil.rmtree(fresh, ignore_errors=True)  # first: the space it took is free again when measured
        if out_of_space(err):
            raise _no_space_for(path, "what was there before is intact") from None
        raise
    finally:
        shutil.rmtree(fresh, ignore_errors=True)  # only left there when writing failed


def _clear_killed_writes(path: Path) -> None:
    """What a write of ``path`` by a process that has ended left beside it (killed by SIGKILL, SIGTERM or the
    OOM killer, which run no cleanup): its new folder, removed (an export is as large as the model's
    weights, and nothing reads it); the earlier folder it had moved aside, if killed between its two
    renames, put back where it was when nothing (or an empty folder) took its place, else removed. Folders
    named before the names held a pid (``.NAME.XXXXXXXX.tmp``) are taken as ended. Writes of live processes
    are left alone."""
    name = re.escape(path.name)
    pattern = re.compile(rf"\.{name}\.(?:(\d+)-)?[a-z0-9_]+\.(tmp|old)")
    for leftover in sorted(path.parent.iterdir()):
        match = pattern.fullmatch(leftover.name)
        if not match or not leftover.is_dir() or (match[1] and process_running(int(match[1]))):
            continue
        try:
            if match[2] == "old" and (not path.exists() or (path.is_dir() and not any(path.iterdir()))):
                if path.exists():
                    path.rmdir()  # made empty by the command's check that it can write there (output_folder)
                leftover.rename(path)
                print(f"note: put back {path}, which a write of it killed midway had moved to {leftover.name}",
                      file=sys.stderr, flush=True)
                continue
            size = sum(f.stat().st_size for f in leftover.rglob("*") if f.is_file())
            shutil.rmtree(leftover)
        except OSError:
            continue  # not ours to change (another user's, a read-only folder): the write goes on beside it
        print(f"note: removed {leftover.name} ({size / 2**20:,.1f} MB) beside {path}: what a write of it that was "
              "killed left", file=sys.stderr, flush=True)


def process_running(pid: int) -> bool:
    """Whether a process with this pid runs now (another user's included)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process (EPERM)
        return True
    return True
