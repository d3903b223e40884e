"""Documents from Hugging Face ``datasets`` (data=hf): local json/jsonl/parquet/csv/text files through
``load_dataset``'s file builders, or a Hub dataset where there is a network, streamed if asked. Each row's
``text_column`` is one document.

Validation: another split (``val_split``), or a deterministic ``val_ratio`` share of the rows (held_out).
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from gptlab.core.errors import ConfigError, DataError, first_line
from gptlab.data.compressed_files import COMPRESSION_SUFFIXES, damage_named
from gptlab.data.documents import Piece, held_out

# datasets' json builder logs "Failed to load JSON from file ..." (twice: its own console and Hydra's) just
# before it raises the error that _unreadable turns into our one line, which says the same.
_JSON_BUILDER_LOGGER = "datasets.packaged_modules.json.json"


class _NoJsonParseLog(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to load JSON from file")


# load_dataset's builders for local files, by the files' extension.
FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}


def builder_for(path: Path) -> str:
    """The builder of a local file, by its extension: a compressed file's is the one before the compression's
    (rows.jsonl.gz was read by the text builder, each line of JSON a document of the text to learn)."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if len(suffixes) >= 2 and suffixes[-1] in COMPRESSION_SUFFIXES:
        suffixes.pop()
    return FILE_BUILDERS.get(suffixes[-1] if suffixes else "", "text")


def _local_files(data_files) -> list[Path]:
    patterns = [data_files] if isinstance(data_files, str) else list(data_files or [])
    files = []
    for pattern in patterns:
        found = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
        if not found:
            raise DataError(f"data.data_files={pattern} matches no file; check the path (quote globs in the shell)")
        files += [Path(f) for f in found]
    return files


class HFDataset:
    def __init__(
        self,
        path: str,
        name: str | None = None,
        data_files=None,
        split: str = "train",
        val_split: str | None = None,
        val_ratio: float = 0.1,
        text_column: str = "text",
        streaming: bool = False,
        cache_dir: str | None = None,
        part: tuple[int, int] | None = None,
    ):
        self.path, self.name, self.split, self.val_split = path, name, split, val_split
        self.val_ratio, self.text_column, self.streaming = val_ratio, text_column, streaming
        self.cache_dir = str(Path(cache_dir).expanduser() / "hf_datasets") if cache_dir else None
        self.files = _local_files(data_files) if data_files else []
        self.data_files = [str(f) for f in self.files] or None
        if not self.files and Path(os.path.expanduser(path)).exists():
            # A local file or folder named as the path: load it with the builder its files call for.
            self.files = [Path(os.path.expanduser(path))]
            if self.files[0].is_file():
                self.data_files = [str(self.files[0])]
                self.path = builder_for(self.files[0])
        # (index, count): this source is part ``index`` of ``count`` of the dataset (prepare.py parts=N):
        # a stream's files are dealt out to the parts, or else every count-th row (datasets' own split).
        self.part = tuple(part) if part else None
        self._splits: dict = {}

    def describe(self) -> str:
        return ", ".join(self.data_files) if self.data_files else self.path

    def fingerprint(self) -> dict:
        stats = [[os.path.abspath(f), f.stat().st_size, f.stat().st_mtime_ns] for f in self.files if f.is_file()]
        part = {"part": list(self.part)} if self.part else {}
        return {
            **part,
            "kind": "hf",
            "path": self.path,
            "name": self.name,
            "files": stats,
            "split": self.split,
            "val_split": self.val_split,
            "val_ratio": None if self.val_split else self.val_ratio,
            "text_column": self.text_column,
            "streaming": self.streaming,
        }

    def total_bytes(self) -> int | None:
        sizes = [f.stat().st_size for f in self.files if f.is_file()]
        return sum(sizes) if sizes else None  # a Hub dataset: not known ahead

    def rows(self, split: str):
        if split not in self._splits:
            self._splits[split] = self._load(split)
        return self._splits[split]

    def _load(self, split: str):
        import datasets  # slow to import: only for data=hf

        datasets.disable_progress_bars()  # ours shows tokens/s; theirs would interleave with it
        json_builder_log = logging.getLogger(_JSON_BUILDER_LOGGER)
        if not any(isinstance(f, _NoJsonParseLog) for f in json_builder_log.filters):
            json_builder_log.addFilter(_NoJsonParseLog())
        try:
            with damage_named(self._cut_off):  # a streamed gzip read for its first rows (EOFError, zlib.error)
                rows = datasets.load_dataset(
                    self.path,
                    self.name,
                    data_files=self.data_files,
                    split=split,
                    streaming=self.streaming or self._read_local_files_as_a_stream(),
                    cache_dir=self.cache_dir,
                )
        except datasets.exceptions.DatasetGenerationError as err:  # a file it found but could not parse
            raise self._unreadable(err.__cause__ or err) from None
        except (FileNotFoundError, ValueError, ConnectionError) as err:
            # datasets' ValueError: 'Unknown split "x". Should be one of [...]'; streaming: 'Bad split: x. ...'
            if "Unknown split" in str(err) or "Bad split" in str(err):
                raise self._unknown_split(split, err) from None
            if "Compression type" in str(err):  # fsspec: "Compression type zstd not supported"
                raise DataError(
                    f"data=hf cannot read {self.describe()}: {first_line(err)}; decompress the files first (zstd -d "
                    "FILE), or install the package that reads them into this environment (zstd: pip install zstandard)"
                ) from None
            raise DataError(
                f"data=hf could not load {self.path!r} (split {split!r}): {first_line(err)}; check data.path, "
                "data.name, data.data_files and data.split (offline, only local files load)"
            ) from None
        if self.part:
            from datasets.distributed import split_dataset_by_node

            rows = split_dataset_by_node(rows, rank=self.part[0], world_size=self.part[1])
        return rows

    def _read_local_files_as_a_stream(self) -> bool:
        """Local files are read once, front to back: as a stream, by the same builder and parser (the same
        rows), rather than copied whole into an Arrow file under data.cache_dir first. The copy took as much
        disk as the corpus and a pass of its own (make bench-data, 1 GB of jsonl: peak RSS 1.51 -> 0.81 GiB,
        about 1 s of 35 faster: the stream's parsing shares the cores with the tokenisers). A part
        (prepare.py parts=N) is read as before: datasets deals a stream's rows out to parts otherwise."""
        return bool(self.files) and self.part is None

    def _unknown_split(self, split: str, err: Exception) -> DataError:
        """Named by the key that asked for it: the message said "check ... data.split" for a data.val_split."""
        if split == self.val_split and split != self.split:
            return DataError(
                f"data.val_split={split} is not a split of {self.path!r} ({first_line(err)}); name one of them, or "
                "leave data.val_split unset to hold out data.val_ratio of the rows"
            )
        return DataError(f"data.split={split} is not a split of {self.path!r} ({first_line(err)}); name one of them")

    def documents(self) -> Iterator[tuple[str, Piece | None]]:
        if self.val_split:  # validation first: a token budget (max_tokens) then still gets all of it
            yield from (("val", piece) for piece in self._texts(self.rows(self.val_split)))
            yield "val", None  # the end of the validation section
            yield from (("train", piece) for piece in self._texts(self.rows(self.split)))
            return
        for index, piece in enumerate(self._texts(self.rows(self.split))):
            yield ("val" if held_out(index, self.val_ratio) else "train"), piece

    def _unreadable(self, err: BaseException) -> DataError:
        return DataError(
            f"data=hf could not read {self.describe()}: {first_line(err)}; fix the file, or check data.path "
            "and data.data_files (json lines: one JSON object per line)"
        )

    def _texts(self, rows) -> Iterator[Piece]:
        try:
            with damage_named(self._cut_off):  # a compressed file cut off: gzip's EOFError, as the stream goes
                yield from self._row_texts(rows)
        except ValueError as err:
            if isinstance(err, ConfigError):
                raise
            raise self._unreadable(err) from None  # streamed files are parsed as they are read (pyarrow)

    def _cut_off(self, err: BaseException) -> DataError:
        return DataError(
            f"data=hf could not read {self.describe()}: {first_line(err)}; a compressed file is cut off or "
            "damaged: download or compress it again (gzip -t FILE, bzip2 -t, xz -t test one)"
        )

    def _row_texts(self, rows) -> Iterator[Piece]:
        for row in rows:
            if self.text_column not in row:
                raise DataError(
                    f"data.text_column={self.text_column} is not a column of {self.describe()}; its columns are "
                    f"{', '.join(row)}: set data.text_column to the one holding the text"
                )
            text = row[self.text_column]
            if text is None:  # an empty csv cell (pyarrow reads it as null), a JSON null: a document of no text
                text = ""
            if not isinstance(text, str):
                raise ConfigError(
                    f"data.text_column={self.text_column} holds {type(text).__name__} values, not text; set "
                    "data.text_column to the column holding the text"
                )
            yield Piece(text, len(text.encode("utf-8")), ends_document=True)
