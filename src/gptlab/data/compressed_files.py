"""Text files stored compressed (gzip, bzip2, xz: CC-100's ``.txt.xz``, OSCAR's ``.txt.gz``), read as the
text they hold, a piece at a time, without a decompressed copy on disk.

A file is known by its first bytes, not its name, so ``corpus.txt`` that is really gzip reads too. Formats
the standard library cannot read (zstd, zip and 7z archives) are refused in one line that says how to
decompress them: read as bytes they were "binary text" with the advice to replace what does not decode.

A compressed stream cannot seek: ``seek`` decompresses from the start (or from where it is, forwards), so
readers go through a file once, in order; and its text's size is known only by reading it.
A corpus of one compressed file is split where its text would be, at ``1 - val_ratio`` of the text's size,
in one pass (``TrainThenVal``): the size is counted on a thread beside it (``TextSizeCounter``; zlib, bz2
and lzma decompress without the GIL; an xz file's is read from its indexes instead), and the training part
is given out as far as the count so far shows it reaches, which it shows ahead of the tokenisers wherever
decompressing is faster than tokenising.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from gptlab.core.errors import DataError

# The magic numbers of the formats read, and of those refused with the command that decompresses them.
READ = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz"}
OPENERS = {"gzip": gzip.open, "bzip2": bz2.open, "xz": lzma.open}
REFUSED = {
    b"\x28\xb5\x2f\xfd": ("zstd-compressed", "zstd -d {path}"),
    b"PK\x03\x04": ("a zip archive", "unzip {path}"),
    b"7z\xbc\xaf\x27\x1c": ("a 7z archive", "7z x {path}"),
}
# The names a folder's compressed text files end with (data.path=<folder> takes these beside .txt).
TEXT_SUFFIXES = (".txt", ".txt.gz", ".txt.bz2", ".txt.xz")
# What a name ends with where the file is compressed (datasets reads these as the file inside, by the name).
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4")


def damaged_stream(err: BaseException) -> bool:
    """Whether ``err`` is what gzip's, bzip2's or xz's reader raises on a cut-off or corrupt stream."""
    if isinstance(err, (EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)):
        return True
    return type(err) is OSError and "Invalid data stream" in str(err)  # bzip2's


@contextlib.contextmanager
def damage_named(error: Callable[[BaseException], DataError]) -> Iterator[None]:
    """A damaged stream met inside (damaged_stream) raised as ``error(err)``, the one line that names it."""
    try:
        yield
    except Exception as err:
        if not damaged_stream(err):
            raise
        raise error(err) from None


def compression_of(path: Path) -> str | None:
    """The compression ``path`` is stored with ("gzip", "bzip2", "xz"), or None for a plain file."""
    with open(path, "rb") as f:
        return _compression_in(f.read(10), path)


def _compression_in(head: bytes, path: Path) -> str | None:
    for magic, kind in READ.items():
        if head.startswith(magic) and (kind != "bzip2" or _bzip2_block(head)):
            return kind
    for magic, (what, command) in REFUSED.items():
        if head.startswith(magic):
            raise DataError(
                f"{path} is {what}, which data=text does not read; decompress it first "
                f"({command.format(path=path)}) and point data.path at the text"
            )
    return None


def _bzip2_block(head: bytes) -> bool:
    """Whether "BZh" begins a bzip2 stream (a block size digit, then a block's or the end's magic), not a text."""
    return head[3:4] in {bytes([d]) for d in b"123456789"} and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90")


def open_bytes(path: Path) -> BinaryIO:
    """``path``'s text as bytes: the file itself, or what its compression holds (a damaged stream is one line)."""
    # Opened once and returned open, the head read from it: a corpus may be a million small files.
    f = open(path, "rb")  # noqa: SIM115
    try:
        kind = _compression_in(f.read(10), path)
    except BaseException:
        f.close()
        raise
    f.seek(0)
    if kind == "xz":
        xz_text_size(path)  # refuses streams that Python's lzma would read only in part
    return f if kind is None else _Decompressed(OPENERS[kind](f, "rb"), f, path, kind)


class _Decompressed:
    """A decompressing reader whose damage (a truncated or corrupt stream) is a DataError naming the file."""

    def __init__(self, stream, file: BinaryIO, path: Path, kind: str):
        self._stream, self._file, self._path, self._kind = stream, file, path, kind

    def read(self, size: int = -1) -> bytes:
        return self._checked(self._stream.read, size)

    def seek(self, offset: int) -> int:  # forwards decompresses on; backwards, again from the start
        return self._checked(self._stream.seek, offset)

    def _checked(self, call, argument: int):
        with damage_named(self._damaged):
            return call(argument)

    def _damaged(self, err: BaseException) -> DataError:
        return DataError(
            f"{self._path} is a damaged or cut-off {self._kind} file ({err}); download or compress it again "
            f"({self._kind} -t {self._path} tests it)"
        )

    def close(self) -> None:
        self._stream.close()
        self._file.close()  # the decompressor leaves a file it was handed open

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def xz_text_size(path: Path) -> int | None:
    """The text's size an xz file records in its indexes (one a stream, read from the end: the footer gives
    the index's size, the index the blocks' sizes), or None where they do not add up to the file (cut off:
    the decompressor says so). Streams with padding between them are refused: Python's lzma (3.11) stops
    at the padding without a word, where xz -d reads on."""
    try:
        with open(path, "rb") as f:
            end, total = f.seek(0, 2), 0
            while end > 0:
                f.seek(end - 4)
                if f.read(4) == b"\0\0\0\0":
                    raise DataError(
                        f"{path} holds xz streams with padding between them, past which Python's lzma reads "
                        f"nothing; decompress it first (xz -d {path}) and point data.path at the text"
                    )
                f.seek(end - 12)
                footer = f.read(12)
                if footer[10:] != b"YZ" or end < 24:
                    return None
                index_size = (int.from_bytes(footer[4:8], "little") + 1) * 4
                f.seek(end - 12 - index_size)
                blocks, text = _xz_index(f.read(index_size))
                start = end - 12 - index_size - blocks - 12
                f.seek(max(start, 0))
                if start < 0 or f.read(6) != b"\xfd7zXZ\x00":
                    return None
                end, total = start, total + text
            return total
    except (OSError, ValueError, IndexError):
        return None


def _xz_index(index: bytes) -> tuple[int, int]:
    """(bytes of the stream's blocks, bytes of their text) from an xz index: an indicator byte, a count, then
    for each block its unpadded size (padded to 4 bytes in the stream) and its uncompressed size (varints)."""

    def varint(position: int) -> tuple[int, int]:
        value, shift = 0, 0
        while True:
            byte = index[position]
            value, position, shift = value | (byte & 0x7F) << shift, position + 1, shift + 7
            if byte < 0x80:
                return value, position

    if index[0] != 0:
        raise ValueError("not an xz index")
    count, position = varint(1)
    blocks = text = 0
    for _ in range(count):
        unpadded, position = varint(position)
        uncompressed, position = varint(position)
        blocks, text = blocks + (unpadded + 3) // 4 * 4, text + uncompressed
    return blocks, text


class TextSizeCounter:
    """Counts the bytes of a compressed file's text on a daemon thread (stopped when the ``with`` ends); an
    xz file's, read from its index at once."""

    def __init__(self, path: Path):
        self.counted, self.error = 0, None
        self.done, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._count, args=(path,), daemon=True, name="gptlab-text-size")
        if compression_of(path) == "xz" and (size := xz_text_size(path)) is not None:
            self.counted = size  # no pass: the thread is never started
            self.done.set()

    def _count(self, path: Path) -> None:
        try:
            with open_bytes(path) as f:
                while not self._stop.is_set() and (block := f.read(1 << 20)):
                    self.counted += len(block)
        except BaseException as err:  # given to the reader that waits for the size
            self.error = err
        finally:
            self.done.set()

    def size(self) -> int | None:
        """The text's size once counted (None before); the counting's error, raised."""
        if not self.done.is_set():
            return None
        if self.error is not None:
            raise self.error
        return self.counted

    def __enter__(self):
        if not self.done.is_set():
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()


class TrainThenVal:
    """One pass over ``stream`` (a compressed file's text) as two readers: ``train`` gives its bytes before the
    split, ``val`` the rest. ``window(size, val_ratio)`` is documents.split_window (the earliest cut and the
    end of its search, for a text of ``size`` bytes) and ``cut_near`` documents' rule for the cut there. Reads
    are whole (``n`` bytes unless the part ends), so the pieces, and the batches a resumed prepare counts,
    are the plain file's. The bytes read past the position while the cut is searched wait in memory: a few
    KiB where a line break follows, up to half the validation part in a text without one (text8: 5 MB)."""

    BLOCK = 1 << 16

    def __init__(
        self, stream, counter: TextSizeCounter, val_ratio: float, window: Callable[[int, float], tuple[int, int]], cut_near
    ):
        self._stream, self._counter, self._val_ratio = stream, counter, val_ratio
        self._window, self._cut_near = window, cut_near
        self._given = 0  # bytes of the training part given out
        self._last = b"\x00"  # the byte before the next one (a NUL before the first: _blocks' convention)
        self._ahead = bytearray()  # bytes read past the split's position to find the cut
        self.cut: int | None = None
        self.train, self.val = _Reader(self._read_train), _Reader(self._read_val)

    def _read_train(self, n: int) -> bytes:
        while self.cut is None:
            size = self._counter.size()
            if size is None:
                # The position for the size counted so far: the cut is past it, whatever the size.
                if self._given + n <= self._window(self._counter.counted, self._val_ratio)[0]:
                    return self._take(n)
                self._counter.done.wait(0.05)
                continue
            position, stop = self._window(size, self._val_ratio)
            if self._given + n <= position:
                return self._take(n)
            if self._given < position:
                return self._take(position - self._given)  # to the position, then the cut's search from there
            self.cut = self._find_cut(position, stop)[0]
        n = min(n, self.cut - self._given)
        data, self._ahead = bytes(self._ahead[:n]), self._ahead[n:]
        self._given += n
        return data

    def _take(self, n: int) -> bytes:
        data = self._stream.read(n)
        if data:
            self._given += len(data)
            self._last = data[-1:]
        return data

    def _find_cut(self, position: int, stop: int) -> tuple[int, bool]:
        def fill(upto: int) -> None:  # self._ahead holds bytes [position, position + len)
            while len(self._ahead) < upto - position and (block := self._stream.read(self.BLOCK)):
                self._ahead += block

        def blocks() -> Iterator[tuple[int, bytes, int]]:
            for offset in range(position, stop, self.BLOCK):
                span = min(self.BLOCK, stop - offset)
                fill(offset + span + 1)
                i = offset - position
                before = self._last if i == 0 else bytes(self._ahead[i - 1 : i])
                yield offset, before + bytes(self._ahead[i : i + span + 1]), span

        def head() -> bytes:
            fill(position + 4)
            return bytes(self._ahead[:4])

        return self._cut_near(blocks, position, head)

    def _read_val(self, n: int) -> bytes:
        if self.cut is None:
            raise RuntimeError("the validation part is read after the training part")
        data, self._ahead = bytes(self._ahead[:n]), self._ahead[n:]
        return data + self._stream.read(n - len(data)) if len(data) < n else data


class _Reader:
    def __init__(self, read: Callable[[int], bytes]):
        self.read = read
