"""Documents of a user's corpus, read a piece at a time: a text file, a folder of them or a glob.

Each file is one document (the tokenizer's end-of-text token separates documents in the shards). A file is
read in pieces of about ``PIECE_BYTES`` that end at a line break, so a 4 GB file never sits in memory whole;
a piece ends only at a newline between two visible ASCII characters, where GPT-2's pre-tokeniser splits
anyway, so the pieces' tokens are exactly the whole file's (tested on all of Tiny Shakespeare).

A text with no line break for megabytes (text8, a minified dump) is cut at a space between two visible ASCII
characters instead, where GPT-2's pre-tokeniser splits too (the space begins the next word's token).

Validation is a held-out share of the documents (``held_out``), or separate files (``val_path``); a corpus
of one file is split at a line break at ``1 - val_ratio`` of its bytes, like the presets' character split
(``split_offset``: at a space, or a character's start, when no line break comes soon enough).
"""

from __future__ import annotations

import glob
import math
import os
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gptlab.core.errors import ConfigError, DataError
from gptlab.data.compressed_files import (
    COMPRESSION_SUFFIXES,
    TEXT_SUFFIXES,
    TextSizeCounter,
    TrainThenVal,
    compression_of,
    open_bytes,
)

PIECE_BYTES = 4 << 20
# Text read without meeting data.document_separator before a note says so: TinyStories' stories are about
# 1 KB, so a separator absent from this much text is most likely misspelt, and the error that names it
# comes only after the whole pass (a folder may hold files without one): minutes for a corpus of gigabytes.
SEPARATOR_NOTICE_BYTES = 64 << 20
ERRORS = ("strict", "replace")
_GOLDEN = (math.sqrt(5) - 1) / 2


def held_out(index: int, val_ratio: float) -> bool:
    """Whether document ``index`` is a validation document: the fractional parts of (index + 1) x golden
    ratio spread evenly over [0, 1), so any run of documents holds out close to ``val_ratio`` of them,
    deterministically and without knowing how many there are."""
    return ((index + 1) * _GOLDEN) % 1.0 < val_ratio


def smallest_ratio_holding_one(documents: int) -> float:
    """The smallest val_ratio, in hundredths, that holds out at least one of the first ``documents``."""
    lowest = min(((index + 1) * _GOLDEN) % 1.0 for index in range(documents))
    return (math.floor(lowest * 100) + 1) / 100


@dataclass(frozen=True)
class Piece:
    """Part of a document: its text, its size in bytes, and whether the document ends with it."""

    text: str
    nbytes: int
    ends_document: bool


def find_text_files(path: str, what: str = "data.path") -> list[Path]:
    """The files ``path`` names: itself, every ``.txt`` (or ``.txt.gz``, ``.txt.bz2``, ``.txt.xz``) below a
    folder, or a glob's matches; sorted."""
    expanded = os.path.expanduser(path)
    if glob.has_magic(expanded):
        files = sorted(Path(p) for p in glob.glob(expanded, recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(f"{what}={path} matches no file; check the pattern (quote it in the shell)")
        return files
    target = Path(expanded)
    if target.is_file():
        return [target]
    if target.is_dir():
        files = sorted(p for p in target.rglob("*.txt*") if p.name.endswith(TEXT_SUFFIXES) and p.is_file())
        if not files:
            raise DataError(
                f"{what}={path} is a folder with no .txt file in it (nor .txt.gz, .txt.bz2, .txt.xz; searched "
                f"recursively){_other_files(target, what)}"
            )
        return files
    raise DataError(f"{what}={path} does not exist; give a .txt file, a folder of them or a glob")


def _other_files(folder: Path, what: str) -> str:
    """For a folder of other text files (.md, .rst, .py ...): the glob that takes its most common kind; for
    one of rows (.jsonl, .csv, .parquet, compressed or not), the data=hf that reads their text column (as
    text, each line of JSON would be a document to learn)."""
    from gptlab.data.hf_documents import builder_for  # this error's path only: it imports this module

    suffixes = Counter(_suffix(p) for p in folder.rglob("*") if p.is_file() and p.suffix and not p.name.startswith("."))
    if not suffixes:
        return ""
    suffix, count = suffixes.most_common(1)[0]
    files = f"{count} {suffix} file{'s' * (count > 1)}"
    if (builder := builder_for(Path(f"rows{suffix}"))) != "text":
        return (
            f"; it holds {files}: read their rows with data=hf data.path={builder} data.data_files='{folder}/**/*{suffix}' "
            "(data.text_column= names the column of text)"
        )
    return f"; it holds {files}: take them with a glob, {what}='{folder}/**/*{suffix}'"


_NOTED_ROWS: set[str] = set()  # once a process: the preflight and the data module both read the source


def _note_files_of_rows(path: str, files: list[Path]) -> None:
    """data=text reads what it is given as text: a .jsonl's lines, JSON syntax and all, become documents to
    learn. Most likely a mistake, so a note names the data=hf that reads their text column instead."""
    from gptlab.data.hf_documents import builder_for  # it imports this module

    rows = [f for f in files if builder_for(f) != "text"]
    if rows and path not in _NOTED_ROWS:
        _NOTED_ROWS.add(path)
        print(
            f"note: data=text reads {rows[0].name}{f' and {len(rows) - 1} more' if len(rows) > 1 else ''} as plain "
            f"text, every line as it is (JSON or CSV syntax and all); to learn a column of text, use data=hf "
            f"data.path={builder_for(rows[0])} data.data_files={path} (data.text_column= names it)",
            file=sys.stderr, flush=True,
        )


def _suffix(path: Path) -> str:
    """A file's kind by its name: ".md", or ".jsonl.gz" where the last suffix is a compression's."""
    suffixes = path.suffixes
    return "".join(suffixes[-2:]) if len(suffixes) >= 2 and suffixes[-1].lower() in COMPRESSION_SUFFIXES else path.suffix


class TextFiles:
    """Documents from text files (``data=text``)."""

    def __init__(
        self,
        path: str,
        val_path: str | None = None,
        val_ratio: float = 0.1,
        errors: str = "strict",
        separator: str | None = None,
    ):
        if errors not in ERRORS:
            raise ConfigError(f"data.errors={errors} is not one of {', '.join(ERRORS)}")
        self.path, self.val_ratio, self.errors, self.separator = path, val_ratio, errors, separator
        self._split: tuple[int, bool] | None = None  # a one-file split (_one_file_split)
        self._compressed: bool | None = None  # whether a file is compressed (total_bytes)
        self._size_counter: TextSizeCounter | None = None  # of the one compressed file being read
        self.files = find_text_files(path)
        self.val_files = find_text_files(val_path, "data.val_path") if val_path else []
        _note_files_of_rows(path, [*self.files, *self.val_files])
        held = sum(held_out(i, val_ratio) for i in range(len(self.files)))
        if not self.val_files and len(self.files) > 1 and held == 0 and separator is None:
            raise DataError(
                f"data.val_ratio={val_ratio} holds out none of the {len(self.files)} documents (each file is "
                f"one); raise data.val_ratio (data.val_ratio={smallest_ratio_holding_one(len(self.files))} holds out "
                "one), or name validation files with data.val_path"
            )

    def fingerprint(self) -> dict:
        """What the shards depend on: every file's name, size and modification time, and the split."""

        def stat(files: list[Path]) -> list:
            # abspath, not resolve: no system call per file (a corpus may hold hundreds of thousands)
            return [[os.path.abspath(f), *_size_and_mtime(f)] for f in files]

        return {
            "kind": "text",
            "files": stat(self.files),
            "val_files": stat(self.val_files),
            "val_ratio": None if self.val_files else self.val_ratio,
            "errors": self.errors,
            **({} if self.separator is None else {"document_separator": self.separator}),
            **self._split_not_at_the_first_line_break(),
        }

    def _split_not_at_the_first_line_break(self) -> dict:
        """The offset of a one-file split where it is not the first line break past ``1 - val_ratio`` (the
        rule before text without line breaks was cut elsewhere): shards of the earlier split are not found."""
        if self.val_files or len(self.files) != 1 or self.separator is not None:
            return {}
        if compression_of(self.files[0]) is not None:  # no earlier rule to tell apart, and finding the split
            return {}  # would decompress the file at every run's start
        cut, at_first_line_break = self._one_file_split()
        return {} if at_first_line_break else {"split_offset": cut}

    def _one_file_split(self) -> tuple[int, bool]:
        """split_offset, found once per source (fingerprint and documents both ask; in a text of one line
        the search for a line break reads half the validation part)."""
        if self._split is None:
            self._split = split_offset(self.files[0], self.val_ratio)
        return self._split

    def total_bytes(self) -> int | None:
        """The text's bytes, for the progress bar. Where a file is compressed they are known only by reading it:
        None, or, for a corpus of one compressed file being read, its text's size once the count has it."""
        files = [*self.files, *self.val_files]
        if self._compressed is None:
            self._compressed = any(compression_of(f) for f in files)
        if not self._compressed:
            return sum(f.stat().st_size for f in files)
        counter = self._size_counter
        return counter.counted if counter is not None and counter.done.is_set() and counter.error is None else None

    def documents(self) -> Iterator[tuple[str, Piece | None]]:
        """(split, piece) pairs, in the same order every time; (split, None) ends a section of one split."""
        if self.separator is not None:
            yield from self._separated_documents()
        elif self.val_files:  # validation first: a token budget (max_tokens) then still gets all of it
            for f in self.val_files:
                yield from (("val", piece) for piece in read_pieces(f, self.errors))
            yield "val", None  # the end of the validation section
            for f in self.files:
                yield from (("train", piece) for piece in read_pieces(f, self.errors))
        elif len(self.files) == 1 and compression_of(self.files[0]) is not None:
            yield from self._one_compressed_file()
        elif len(self.files) == 1:
            cut, _ = self._one_file_split()
            yield from (("train", piece) for piece in read_pieces(self.files[0], self.errors, 0, cut))
            yield from (("val", piece) for piece in read_pieces(self.files[0], self.errors, cut, None))
        else:
            for index, f in enumerate(self.files):
                split = "val" if held_out(index, self.val_ratio) else "train"
                yield from ((split, piece) for piece in read_pieces(f, self.errors))

    def _one_compressed_file(self) -> Iterator[tuple[str, Piece | None]]:
        """A compressed file split as its text would be, in one pass: its text's size is counted on a thread
        beside it (seeking to the split would decompress it all again), and the training part given out as
        far as that count shows it reaches."""
        path = self.files[0]
        with open_bytes(path) as f, TextSizeCounter(path) as counter:
            self._size_counter = counter  # total_bytes gives the progress bar its size once counted
            parts = TrainThenVal(f, counter, self.val_ratio, split_window, cut_near)
            yield from (("train", piece) for piece in _pieces(parts.train, path, self.errors, 0, None))
            yield from (("val", piece) for piece in _pieces(parts.val, path, self.errors, parts.cut, None))

    def _separated_documents(self) -> Iterator[tuple[str, Piece | None]]:
        """Documents between separators; without data.val_path, a held-out share of them, counted over all files."""
        from gptlab.data.document_separator import SeparatedDocuments  # it reads Piece from here

        splitter = SeparatedDocuments(self.separator)
        noted = False

        def documents_of(f: Path) -> Iterator[Piece]:
            nonlocal noted
            for piece in splitter.split(read_pieces(f, self.errors)):
                yield piece
                if not (noted or splitter.found) and splitter.bytes_read >= SEPARATOR_NOTICE_BYTES:
                    noted = True
                    self._note_no_separator_yet(splitter.bytes_read)

        if self.val_files:
            for f in self.val_files:
                yield from (("val", piece) for piece in documents_of(f))
            yield "val", None
            for f in self.files:
                yield from (("train", piece) for piece in documents_of(f))
        else:
            index = 0
            for f in self.files:
                for piece in documents_of(f):
                    yield ("val" if held_out(index, self.val_ratio) else "train"), piece
                    index += piece.ends_document
        if not splitter.found:
            raise DataError(
                f"data.document_separator={self.separator!r} is in none of the files of data.path={self.path}"
                f"{' or data.val_path' if self.val_files else ''}; give the text that stands between their documents "
                "(TinyStories: '<|endoftext|>'), or leave it null for a document per file"
            )

    def _note_no_separator_yet(self, read: int) -> None:
        from tqdm import tqdm  # printed above a progress bar, not through it

        tqdm.write(
            f"note: no data.document_separator={self.separator!r} in the first {read / 2**20:.0f} MB of "
            f"data.path={self.path}; if it is misspelt, stop (Ctrl-C) and fix it now: found in no file, it stops "
            "the run with an error after the whole pass",
            file=sys.stderr,
        )


def _size_and_mtime(path: Path) -> tuple[int, int]:
    status = os.stat(path)
    return status.st_size, status.st_mtime_ns


def split_offset(path: Path, val_ratio: float) -> tuple[int, bool]:
    """Where one file's validation part begins, and whether that is just past the first line break at or
    after ``1 - val_ratio`` of its bytes. The line break is looked for in the first half of the validation
    part only: past it (a text of one line, or one whose only line break ends it) the validation part would
    shrink to nothing, so the cut falls at a space between visible characters there, else at the first
    character that starts there. Read 64 KiB at a time: the first line break is usually in the first."""
    position, stop = split_window(path.stat().st_size, val_ratio)
    with open(path, "rb") as f:

        def head() -> bytes:
            f.seek(position)
            return f.read(4)

        return cut_near(lambda: _blocks(f, position, stop), position, head)


def split_window(size: int, val_ratio: float) -> tuple[int, int]:
    """Where a text of ``size`` bytes is split at the earliest (``1 - val_ratio`` of it), and the end of the
    stretch searched for a line break or a space (the first half of the validation part)."""
    position = int(size * (1 - val_ratio))
    return position, position + max((size - position) // 2, 1)


def cut_near(blocks, position: int, head) -> tuple[int, bool]:
    """split_offset's rule over ``blocks()`` (as _blocks gives them, from ``position``; called once, then again
    if no line break is met) and ``head()`` (the 4 bytes at ``position``)."""
    for offset, block, span in blocks():
        if (newline := block.find(b"\n", 1, 1 + span)) >= 0:
            return offset + newline, True  # just past it: ``block`` starts a byte before ``offset``
    for offset, block, span in blocks():
        if (space := _first_safe_space(block, 1 + span)) >= 0:
            return offset + space - 1, False
    data = head()  # a UTF-8 character is at most 4 bytes: one of them starts the next
    return position + next((i for i, byte in enumerate(data) if byte & 0xC0 != 0x80), len(data)), False


def _blocks(f, start: int, stop: int, block_bytes: int = 1 << 16) -> Iterator[tuple[int, bytes, int]]:
    """(offset, bytes, span) for each block [offset, offset + span) of [start, stop), the bytes holding one
    more on each side where the file has it (a NUL byte before its start): index i is offset + i - 1."""
    for offset in range(start, stop, block_bytes):
        span = min(block_bytes, stop - offset)
        f.seek(max(offset - 1, 0))
        before = b"" if offset > 0 else b"\x00"
        yield offset, before + f.read(span + 1 + (offset > 0)), span


def _first_safe_space(data: bytes, end: int | None = None) -> int:
    """The first space before ``end`` with a visible ASCII character on each side (-1 if none)."""
    end = len(data) - 1 if end is None else min(end, len(data) - 1)
    position = 1
    while (space := data.find(b" ", position, end)) >= 0:
        if _visible(data[space - 1]) and _visible(data[space + 1]):
            return space
        position = space + 1
    return -1


def read_pieces(path: Path, errors: str, start: int = 0, end: int | None = None) -> Iterator[Piece]:
    """The document in bytes [start, end) of ``path``'s text, decoded as UTF-8 a piece at a time."""
    with open_bytes(path) as f:
        if start:
            f.seek(start)
        yield from _pieces(f, path, errors, start, end)


def _pieces(f, path: Path, errors: str, start: int, end: int | None) -> Iterator[Piece]:
    """The pieces of [start, end) of ``f``'s bytes, ``f`` at ``start``; it is left at ``end``."""
    offset, pending = start, b""
    while True:
        want = PIECE_BYTES if end is None else min(PIECE_BYTES, end - offset - len(pending))
        block = f.read(want) if want > 0 else b""
        data = pending + block
        at_end = not block
        cut = len(data) if at_end else _safe_cut(data)
        if cut == 0 and not at_end:  # no line to end a piece at yet: read on
            pending = data
            continue
        piece, pending = data[:cut], data[cut:]
        text = _decode(piece, path, offset, errors)
        if offset == 0:  # the byte order mark Windows editors begin UTF-8 files with is no text
            text = text.removeprefix("\ufeff")
        yield Piece(text, len(piece), ends_document=at_end)
        offset += cut
        if at_end:
            return


def _safe_cut(data: bytes) -> int:
    """Just past the last line break with a visible ASCII character on each side (0 if none). There GPT-2's
    pre-tokeniser makes the newline a token of its own whether or not the text goes on (next to more
    whitespace it would not: "\n\n" is one token at the end of a text, two before a word), and a UTF-8
    sequence never straddles a newline byte. Failing one in a whole piece's worth of text: just before the
    last space with a visible ASCII character on each side, which begins the next token (" word", " 42",
    " ,") whether or not the text goes on, so memory stays bounded for a text of one line too."""
    position = len(data) - 1
    while (newline := data.rfind(b"\n", 1, position)) >= 0:
        if _visible(data[newline - 1]) and _visible(data[newline + 1]):
            return newline + 1
        position = newline
    if len(data) < PIECE_BYTES:
        return 0
    position = len(data) - 1
    while (space := data.rfind(b" ", 1, position)) >= 0:
        if _visible(data[space - 1]) and _visible(data[space + 1]):
            return space
        position = space
    return 0


def _visible(byte: int) -> bool:
    return 0x21 <= byte < 0x7F


def _decode(data: bytes, path: Path, offset: int, errors: str) -> str:
    if errors == "strict":
        nul = data.find(b"\x00")
        if nul >= 0:
            raise DataError(
                f"{path} looks binary (a NUL byte at byte offset {offset + nul}); remove it from the corpus "
                "or set data.errors=replace to read it anyway"
            )
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path} is not UTF-8 text (byte offset {offset + err.start}: {err.reason}); convert it to "
            "UTF-8, or set data.errors=replace to replace what does not decode"
        ) from None
