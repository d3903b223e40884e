"""Hugging Face datasets as a source (data=hf): jsonl and parquet files made from Tiny Shakespeare, each row a
document; another split for validation; a token budget; a missing text column named with the columns."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from gptlab.core.errors import ConfigError, DataError
from gptlab.data.hf_documents import HFDataset, builder_for
from gptlab.data.prepare import prepare_shards
from gptlab.data.shards import open_shard
from gptlab.data.tokenizers import ENDOFTEXT, gpt2_encoding


@pytest.fixture
def rows(shakespeare_text) -> list[dict]:
    speeches = shakespeare_text.split("\n\n")
    return [{"id": i, "text": "\n\n".join(speeches[i : i + 200])} for i in range(0, len(speeches), 200)]


def write_jsonl(path, rows) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return str(path)


def tokens(prepared, split) -> np.ndarray:
    return np.concatenate([np.asarray(open_shard(p)) for p in prepared.paths(split)])


@pytest.mark.parametrize("layout", ["jsonl", "parquet"])
def test_each_row_is_a_document_and_the_shards_decode_to_the_rows(tmp_path, rows, layout):
    if layout == "jsonl":
        source = HFDataset("json", data_files=write_jsonl(tmp_path / "rows.jsonl", rows), val_split=None, val_ratio=0.2)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet")
        source = HFDataset(str(tmp_path / "rows.parquet"), val_ratio=0.2, cache_dir=str(tmp_path / "cache"))
    prepared = prepare_shards(source, "gpt2", tmp_path / "cache", progress=False)
    from gptlab.data.documents import held_out

    encoding = gpt2_encoding()
    for split in ("train", "val"):
        texts = [r["text"] for i, r in enumerate(rows) if held_out(i, 0.2) == (split == "val")]
        assert texts
        ids = tokens(prepared, split)
        assert encoding.decode(ids.tolist()) == "".join(t + ENDOFTEXT for t in texts)
        assert len(ids) == sum(len(encoding.encode_ordinary(t)) + 1 for t in texts)


def test_local_files_are_read_as_they_are_without_an_arrow_copy(tmp_path, rows):
    # datasets copied every local file whole into an Arrow file under data.cache_dir before the first row
    # (a second pass, and as much disk again as the corpus). Read as a stream by the same builder, the
    # documents are the rows the copy gave, quirks included: a byte order mark, CRLF and blank lines, a
    # row without the text column (null), characters past 16 bits and a NUL.
    import datasets

    first = tmp_path / "a.jsonl"
    lines = [json.dumps({"id": 0, "text": "first"}), "", json.dumps({"id": 1}), *(json.dumps(r) for r in rows[1:4])]
    first.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode("utf-8"))
    second = write_jsonl(tmp_path / "b.jsonl", [{"id": 9, "text": "caf\u00e9 \U0001f600 \x00"}, *rows[4:6]])
    files = [str(first), second]
    copied = datasets.load_dataset("json", data_files=files, split="train", cache_dir=str(tmp_path / "copy"))
    assert list((tmp_path / "copy").rglob("*.arrow"))  # the copy the reference reading makes
    expected = [row["text"] or "" for row in copied]

    cache = tmp_path / "cache"
    source = HFDataset("json", data_files=[str(tmp_path / "*.jsonl")], val_ratio=0.0, cache_dir=str(cache))
    assert [piece.text for _, piece in source.documents()] == expected
    prepared = prepare_shards(source, "gpt2", cache, progress=False)
    assert gpt2_encoding().decode(tokens(prepared, "train").tolist()) == "".join(t + ENDOFTEXT for t in expected)
    assert not list(cache.rglob("*.arrow"))
    # A part of a dataset (prepare.py parts=N) is still read as datasets splits a dataset, from its copy.
    part = HFDataset("json", data_files=files, val_ratio=0.0, cache_dir=str(cache), part=(1, 2))
    assert [piece.text for _, piece in part.documents()] == expected[len(expected) - len(expected) // 2 :]


def test_another_split_validates_and_max_tokens_caps_training(tmp_path, rows):
    write_jsonl(tmp_path / "train.jsonl", rows[:-2])
    write_jsonl(tmp_path / "valid.jsonl", rows[-2:])
    files = {"train": str(tmp_path / "train.jsonl"), "validation": str(tmp_path / "valid.jsonl")}
    source = HFDataset("json", data_files=None, val_split="validation", cache_dir=str(tmp_path / "cache"))
    source.data_files = files  # load_dataset's split -> files mapping
    prepared = prepare_shards(source, "gpt2", tmp_path / "cache", progress=False, max_tokens=10_000)
    assert prepared.tokens("train") == 10_000
    val_text = "".join(r["text"] + ENDOFTEXT for r in rows[-2:])
    assert gpt2_encoding().decode(tokens(prepared, "val").tolist()) == val_text


def test_a_missing_text_column_is_named_with_the_columns_there_are(tmp_path, rows, capsys):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"id": r["id"], "body": r["text"]} for r in rows])
    with pytest.raises(DataError, match=r"data.text_column=text is not a column of .*rows.jsonl; its columns are id, body"):
        prepare_shards(HFDataset("json", data_files=path), "gpt2", tmp_path / "cache", progress=True)
    assert not list((tmp_path / "cache").rglob("*.bin"))
    # The source's mistake is found before the progress bar is drawn: one line, no empty bar before it.
    assert "tokenising" not in capsys.readouterr().err


@pytest.mark.parametrize("layout", ["csv", "jsonl"])
def test_a_row_without_text_is_an_empty_document(tmp_path, rows, layout):
    # An empty csv cell is read as null, as is a JSON null: a whole corpus was refused for one of them
    # ("data.text_column=text holds NoneType values, not text").
    rows = [*rows[:3], {"id": 99, "text": None}, *rows[3:6]]
    if layout == "csv":
        import csv

        with open(tmp_path / "rows.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["id", "text"])
            writer.writeheader()
            writer.writerows({"id": r["id"], "text": r["text"] or ""} for r in rows)
        path = str(tmp_path / "rows.csv")
    else:
        path = write_jsonl(tmp_path / "rows.jsonl", rows)
    prepared = prepare_shards(HFDataset(path, val_ratio=0.0), "gpt2", tmp_path / "cache", progress=False)
    assert gpt2_encoding().decode(tokens(prepared, "train").tolist()) == "".join((r["text"] or "") + ENDOFTEXT for r in rows)


def test_a_column_of_numbers_is_not_text(tmp_path, rows):
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    with pytest.raises(ConfigError, match=r"data.text_column=id holds int values, not text"):
        prepare_shards(HFDataset(path, text_column="id"), "gpt2", tmp_path / "cache", progress=False)


@pytest.mark.parametrize(
    "splits, expected",
    [
        ({"val_split": "test"}, r"data.val_split=test is not a split of 'json' \(.*\btest\b.*leave data.val_split unset"),
        ({"split": "validation"}, r"data.split=validation is not a split of 'json' \(.*name one of them$"),
    ],
    ids=["val_split", "split"],
)
# A stream says "Bad split: x" where a dataset says 'Unknown split "x"': the stream's was the message for a
# load that failed ("check data.path, ...") until local files were read as streams too.
@pytest.mark.parametrize("streaming", [False, True])
def test_a_split_the_files_lack_is_named_by_its_key(tmp_path, rows, splits, expected, streaming):
    # "check data.path, data.name, data.data_files and data.split" blamed data.split for a data.val_split.
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    part = None if streaming else (0, 1)  # a part is read as a dataset, not a stream (see the test below)
    source = HFDataset("json", data_files=path, cache_dir=str(tmp_path / "c"), streaming=streaming, part=part, **splits)
    with pytest.raises(DataError, match=expected):
        prepare_shards(source, "gpt2", tmp_path / "cache", progress=False)


def test_a_missing_data_file_is_one_line(tmp_path):
    with pytest.raises(DataError, match="matches no file"):
        HFDataset("json", data_files=str(tmp_path / "nope.jsonl"))


@pytest.mark.parametrize("streaming", [False, True])
def test_a_file_that_does_not_parse_is_one_line_naming_it(tmp_path, streaming, caplog):
    # datasets raised DatasetGenerationError (or pyarrow's ArrowInvalid while streaming): a traceback.
    path = tmp_path / "notes.jsonl"
    path.write_text('{"text": "a row"}\nnot json at all\n')
    source = HFDataset("json", data_files=str(path), streaming=streaming, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"data=hf could not read .*notes.jsonl: JSON parse error.*fix the file"):
        prepare_shards(source, "gpt2", tmp_path / "cache", progress=False)
    # Only our line: datasets' own "Failed to load JSON from file" log said the same, twice, before it.
    assert not [r for r in caplog.records if "Failed to load JSON" in r.getMessage()]


def test_a_compressed_file_is_read_by_the_builder_of_the_name_inside(tmp_path, rows):
    # rows.jsonl.gz went to the text builder (by ".gz"): each line of JSON became a document to learn.
    path = tmp_path / "rows.jsonl.gz"
    path.write_bytes(gzip.compress(Path(write_jsonl(tmp_path / "rows.jsonl", rows)).read_bytes()))
    source = HFDataset(str(path), val_ratio=0.2)
    assert source.path == "json"
    prepared = prepare_shards(source, "gpt2", tmp_path / "cache", progress=False)
    text = gpt2_encoding().decode(tokens(prepared, "train").tolist())
    assert text.startswith(rows[0]["text"] + ENDOFTEXT) and '{"id"' not in text
    names = {"a.JSONL.GZ": "json", "b.csv.bz2": "csv", "c.parquet": "parquet", "d.txt.xz": "text", "e.gz": "text", "f": "text"}
    assert {name: builder_for(tmp_path / name) for name in names} == names


@pytest.mark.parametrize("streaming", [False, True])
def test_a_cut_off_compressed_file_is_one_line(tmp_path, rows, streaming):
    # gzip's EOFError came through the stream's rows as a traceback.
    path = tmp_path / "rows.jsonl.gz"
    whole = gzip.compress(Path(write_jsonl(tmp_path / "rows.jsonl", rows)).read_bytes())
    path.write_bytes(whole[: len(whole) // 2])
    source = HFDataset("json", data_files=str(path), streaming=streaming, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"could not read .*rows.jsonl.gz: Compressed file ended .*; a compressed file is cut off"):
        prepare_shards(source, "gpt2", tmp_path / "cache", progress=False)


@pytest.mark.skipif(importlib.util.find_spec("zstandard") is not None, reason="zstandard installed: datasets reads .zst")
def test_a_zstd_file_without_zstandard_says_how_to_read_it(tmp_path):
    # "Compression type zstd not supported; check data.path, data.name, data.data_files and data.split"
    path = tmp_path / "rows.jsonl.zst"
    path.write_bytes(b"\x28\xb5\x2f\xfd" + bytes(64))
    source = HFDataset("json", data_files=str(path), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"cannot read .*rows.jsonl.zst: .*zstd.*decompress the files first \(zstd -d FILE\)"):
        prepare_shards(source, "gpt2", tmp_path / "cache", progress=False)
